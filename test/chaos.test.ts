/**
 * Chaos: six real processes contend for two slots on a private PostgreSQL while the test injects random faults
 * (seeded; `CHAOS_SEED` replays a run, `CHAOS_SECONDS` makes it longer). Afterwards the whole event log is
 * checked by `support/chaos-checker.ts`: more than N bodies only inside the documented detection window, the
 * fleet back to N holders within a bound after every fault, and every signal sent while the fleet was stable
 * delivered to each holder exactly once. The measured figures are printed as a table.
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, writeFileSync } from "node:fs"
import { afterAll, describe, expect, it } from "@effect/vitest"
import pg from "pg"
import { slotChannel, slotKey } from "../src/Keys.js"
import {
  type ChaosLog,
  check,
  defaultPolicy,
  type Fault,
  type FaultKind,
  formatReport,
  type LogEvent,
  type SentSignal,
  seededRandom
} from "./support/chaos-checker.js"
import { type Dyno, sleep, spawnDyno, waitFor } from "./support/fleet.js"
import { uniqueKeyBase } from "./support/layer.js"
import { startThrowawayPostgres, type ThrowawayPostgres } from "./support/postgres.js"

const N = 2
const hostProcesses = 4
const namespaceProcesses = 2
const chaosMs = Number(process.env.CHAOS_SECONDS ?? "60") * 1000
const seed = process.env.CHAOS_SEED === undefined ? Date.now() % 2 ** 31 : Number(process.env.CHAOS_SEED)

const print = (text: string) => process.stderr.write(`chaos: ${text}\n`)

/** A network namespace with a veth pair to the host, whose host end can be taken down to cut the link. */
interface Namespace {
  readonly name: string
  readonly hostAddress: string
  readonly subnet: string
  readonly cut: () => void
  readonly heal: () => void
  readonly remove: () => void
}

const ip = (...args: ReadonlyArray<string>) => execFileSync("ip", args, { stdio: "pipe" }).toString()

/** Whether this machine lets the test make network namespaces (root and iproute2). */
const namespacesUsable = (() => {
  try {
    ip("netns", "list")
    return process.getuid?.() === 0
  } catch {
    return false
  }
})()

/** Names include a label and the test's pid, so that parallel runs do not collide. */
const createNamespace = (label: string): Namespace | string => {
  const tag = String(process.pid)
  const name = `tld-${label}-${tag}`
  const hostIf = `tl${label[0]}h${tag}`.slice(0, 15)
  const nsIf = `tl${label[0]}n${tag}`.slice(0, 15)
  try {
    const used = ip("-o", "-4", "addr", "show")
    let octet = 1 + (process.pid % 250)
    for (let i = 0; i < 250 && used.includes(`10.203.${octet}.`); i++) octet = 1 + (octet % 250)
    const base = `10.203.${octet}`
    ip("netns", "add", name)
    const remove = () => {
      for (const args of [
        ["link", "del", hostIf],
        ["netns", "del", name]
      ]) {
        try {
          ip(...args)
        } catch {
          // already gone
        }
      }
    }
    try {
      ip("link", "add", hostIf, "type", "veth", "peer", "name", nsIf)
      ip("link", "set", nsIf, "netns", name)
      ip("addr", "add", `${base}.1/24`, "dev", hostIf)
      ip("link", "set", hostIf, "up")
      ip("netns", "exec", name, "ip", "addr", "add", `${base}.2/24`, "dev", nsIf)
      ip("netns", "exec", name, "ip", "link", "set", nsIf, "up")
      ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
    } catch (error) {
      remove()
      throw error
    }
    return {
      name,
      hostAddress: `${base}.1`,
      subnet: `${base}.0/24`,
      cut: () => ip("link", "set", hostIf, "down"),
      heal: () => ip("link", "set", hostIf, "up"),
      remove
    }
  } catch (error) {
    return error instanceof Error ? error.message.split("\n")[0]! : String(error)
  }
}

/** A superuser client that reconnects on the next call after any failure (the server restarts under it). */
const adminClient = (url: string) => {
  let client: pg.Client | undefined
  return {
    query: async (text: string, values?: Array<unknown>) => {
      if (client === undefined) {
        const fresh = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
        fresh.on("error", () => {
          if (client === fresh) client = undefined
        })
        await fresh.connect()
        client = fresh
      }
      const current = client
      try {
        return await current.query(text, values)
      } catch (error) {
        client = undefined
        current.end().catch(() => undefined)
        throw error
      }
    },
    end: () => client?.end().catch(() => undefined)
  }
}

interface Proc {
  readonly name: string
  readonly dyno: Dyno
  readonly inNamespace: boolean
  /** Set when the test kills or stops it, so its exit is expected. */
  expected: boolean
  killedAt?: number
  exited: boolean
}

describe("chaos", () => {
  // What the test made, also removed here should the test itself be abandoned (a timeout).
  const made: { ns?: Namespace | undefined; procs: Array<Proc>; server?: ThrowawayPostgres | undefined } = {
    procs: []
  }
  afterAll(async () => {
    for (const p of made.procs) p.dyno.kill("SIGKILL")
    await made.server?.stop()
    made.ns?.remove()
  })

  it("at most N under random faults, back to N after each, signals delivered once", {
    timeout: chaosMs + 180_000
  }, async () => {
    const random = seededRandom(seed)
    print(`seed ${seed} (replay with CHAOS_SEED=${seed}), ${chaosMs / 1000} s of faults`)
    const namespace = createNamespace("chaos")
    if (typeof namespace === "string") {
      print(`network namespaces are unavailable (${namespace}); the network-cut fault is skipped`)
    }
    const ns = typeof namespace === "string" ? undefined : namespace
    const procs: Array<Proc> = made.procs
    made.ns = ns
    const faults: Array<Fault> = []
    const signals: Array<SentSignal> = []
    const anomalies: Array<string> = []
    let server: ThrowawayPostgres | undefined
    const admin: Array<ReturnType<typeof adminClient>> = []
    let sending = false
    let sender: Promise<void> = Promise.resolve()
    const t0 = Date.now()
    let end = t0
    try {
      server = await startThrowawayPostgres(
        ns === undefined
          ? {}
          : { listen: `127.0.0.1,${ns.hostAddress}`, hba: [`host all all ${ns.subnet} scram-sha-256`] }
      )
      made.server = server
      const db = server
      const keyBase = uniqueKeyBase("chaos")
      const control = adminClient(db.url)
      const notifier = adminClient(db.url)
      admin.push(control, notifier)
      const namespaceUrl = ns === undefined ? "" : db.url.replace("@127.0.0.1:", `@${ns.hostAddress}:`)
      let counter = 0

      const spawn = (inNamespace: boolean) => {
        const name = `${inNamespace ? "n" : "p"}${counter++}`
        const env = {
          DATABASE_URL: inNamespace ? namespaceUrl : db.url,
          KEY_BASE: keyBase,
          DYNOS: String(N),
          WATCH: "push"
        }
        const prefix = inNamespace && ns !== undefined ? ["ip", "netns", "exec", ns.name] : []
        const proc: Proc = { name, dyno: spawnDyno(env, name, prefix), inNamespace, expected: false, exited: false }
        void proc.dyno.exited.then((code) => {
          proc.exited = true
          if (!proc.expected) {
            anomalies.push(`${name} exited by itself (code ${code}): ${proc.dyno.stderr.join("").slice(-2000)}`)
          }
        })
        procs.push(proc)
        return proc
      }
      const alive = () => procs.filter((p) => !p.exited && p.killedAt === undefined)
      const holders = () => alive().filter((p) => p.dyno.running())
      const slotOf = (p: Proc) => [...p.dyno.events].reverse().find((e) => e.event === "start")?.slot

      // The namespace's processes start first, so that they hold the slots when the first fault, a cut, comes.
      if (ns !== undefined) {
        const first = Array.from({ length: namespaceProcesses }, () => spawn(true))
        await waitFor("the namespace's processes to hold the slots", () => first.every((p) => p.dyno.running()), 60_000)
      }
      while (alive().length < hostProcesses + (ns === undefined ? 0 : namespaceProcesses)) spawn(false)
      await waitFor(`${N} holders`, () => holders().length === N, 60_000)
      await waitFor("every process to be ready", () =>
        alive().every((p) => p.dyno.events.some((e) => e.event === "ready"))
      )
      await sleep(1000)

      sending = true
      sender = (async () => {
        const channels = Array.from({ length: N }, (_, slot) => slotChannel(keyBase, slot))
        const statement = `SELECT ${channels.map((_, i) => `pg_notify($${i + 1}, $${N + 1})`).join(", ")}`
        for (let k = 0; sending; k++) {
          const payload = `chaos ${k}`
          const sentAt = Date.now()
          try {
            await notifier.query(statement, [...channels, payload])
            signals.push({ payload, sentAt, ackedAt: Date.now() })
          } catch {
            // the server is restarting: this payload is not counted as sent
          }
          await sleep(300)
        }
      })()

      // What the server and the processes say, for the report when the fleet does not recover.
      const diagnose = async () => {
        const lines: Array<string> = []
        try {
          const rows = await control.query(
            "SELECT a.pid, a.application_name, a.state, a.client_addr, left(a.query, 60) AS query, " +
              "string_agg(l.classid::int8 || ':' || l.objid::int8 || ':' || l.mode || ':' || l.granted, ' ') " +
              "AS locks " +
              "FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.locktype = 'advisory' " +
              "WHERE a.backend_type = 'client backend' GROUP BY 1, 2, 3, 4, 5 ORDER BY 2"
          )
          for (const row of rows.rows) lines.push(`pg: ${JSON.stringify(row)}`)
        } catch (error) {
          lines.push(`pg: ${String(error)}`)
        }
        if (ns !== undefined) {
          try {
            lines.push(`ss: ${execFileSync("ss", ["-tnoi", "dst", ns.subnet]).toString()}`)
          } catch (error) {
            lines.push(`ss: ${String(error)}`)
          }
        }
        for (const p of alive()) {
          lines.push(`${p.name} (pid ${p.dyno.child.pid}) stderr: ${p.dyno.stderr.join("").slice(-800)}`)
        }
        return `diagnosis:\n    ${lines.join("\n    ")}`
      }

      const replace = (victim: Proc) => spawn(victim.inNamespace)
      const pickHolder = () => {
        const list = holders()
        return list[Math.floor(random() * list.length)]
      }
      const inject = async (kind: FaultKind): Promise<void> => {
        const running = holders()
        if (kind === "kill9" || kind === "sigterm") {
          // Mostly a holder; now and then a standby, which must disturb nothing.
          const standbys = alive().filter((p) => !p.dyno.running())
          const target = random() < 0.8 || standbys.length === 0 ? pickHolder()! : standbys[0]!
          target.expected = true
          const t = Date.now()
          faults.push({ kind, t, targets: [target.name] })
          if (kind === "kill9") {
            target.dyno.kill("SIGKILL")
            target.killedAt = Date.now()
            replace(target)
          } else {
            target.dyno.kill("SIGTERM")
            replace(target)
            await Promise.race([target.dyno.exited, sleep(15_000)])
            if (!target.exited) {
              anomalies.push(`${target.name} did not exit within 15 s of SIGTERM`)
              target.dyno.kill("SIGKILL")
              target.killedAt = Date.now()
            }
          }
        } else if (kind === "terminate") {
          const target = pickHolder()!
          const slot = slotOf(target)!
          const found = await control.query(
            "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid " +
              "WHERE l.locktype = 'advisory' AND l.classid = (-2147483648)::int4::oid AND l.objid = $1::int4::oid " +
              "AND l.objsubid = 2 AND l.mode = 'ExclusiveLock' AND l.granted",
            [slotKey(keyBase, slot)[1]]
          )
          const row = found.rows[0] as { pid: number; application_name: string } | undefined
          if (row === undefined) {
            anomalies.push(`terminate: no backend holds slot ${slot}, which ${target.name} runs`)
            return
          }
          const owner = procs.find((p) => row.application_name.endsWith(`:${p.dyno.child.pid}`))
          const t = Date.now()
          faults.push({ kind, t, targets: [owner?.name ?? target.name] })
          await control.query("SELECT pg_terminate_backend($1)", [row.pid])
        } else if (kind === "restart") {
          faults.push({ kind, t: Date.now(), targets: alive().map((p) => p.name) })
          await db.restart()
        } else {
          const targets = alive().filter((p) => p.inNamespace)
          faults.push({ kind, t: Date.now(), targets: targets.map((p) => p.name) })
          ns!.cut()
        }
        const fault = faults.at(-1)!
        const victims = running.filter((p) => fault.targets.includes(p.name))
        await waitFor(
          `the bodies hit by ${kind} to stop`,
          () => victims.every((p) => p.killedAt !== undefined || !p.dyno.running()),
          30_000
        )
        await waitFor(`${N} holders after ${kind}`, () => holders().length >= N, 60_000)
        if (kind === "cut") ns!.heal()
      }

      // Every kind once, in a seeded order (the cut first, while the namespace holds), then at random.
      const others: Array<FaultKind> = ["kill9", "sigterm", "terminate", "restart"]
      for (let i = others.length - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1))
        ;[others[i], others[j]] = [others[j]!, others[i]!]
      }
      const plan: Array<FaultKind> = ns === undefined ? others : ["cut", ...others]
      const weights: Array<[FaultKind, number]> = [
        ["kill9", 3],
        ["sigterm", 2],
        ["terminate", 4],
        ["restart", 1],
        ["cut", 2]
      ]
      // A cut needs a live process in the namespace; holders and standbys alike may be cut.
      const cuttable = () => alive().some((p) => p.inNamespace)
      const deadline = t0 + chaosMs
      while (Date.now() < deadline) {
        const left = deadline - Date.now()
        let kind = plan.shift()
        if (kind === undefined) {
          const eligible = weights.filter(
            ([k]) =>
              (k !== "cut" || (ns !== undefined && left > 25_000 && cuttable())) && (k !== "restart" || left > 8_000)
          )
          let roll = random() * eligible.reduce((sum, [, w]) => sum + w, 0)
          kind = "terminate"
          for (const [k, w] of eligible) {
            roll -= w
            if (roll < 0) {
              kind = k
              break
            }
          }
        }
        if (kind === "cut" && !cuttable()) kind = "terminate"
        print(`${((Date.now() - t0) / 1000).toFixed(1)} s: ${kind}`)
        try {
          await inject(kind)
        } catch (error) {
          const at = (faults.at(-1)?.t ?? t0) - t0
          anomalies.push(`after ${kind} at ${at} ms: ${error instanceof Error ? error.message : error}`)
          anomalies.push(await diagnose())
          break
        }
        // A quiet spell, during which the signals sent must reach each holder exactly once.
        await sleep(4000 + random() * 2000)
      }
    } catch (error) {
      anomalies.push(`the run stopped early: ${error instanceof Error ? error.stack : String(error)}`)
    } finally {
      sending = false
      await sender
      await sleep(1500)
      end = Date.now()
      for (const p of procs) p.expected = true
      for (const p of procs) p.dyno.kill("SIGKILL")
      await Promise.all(procs.map((p) => Promise.race([p.dyno.exited, sleep(5000)])))
      for (const client of admin) await client.end()
      await server?.stop()
      ns?.remove()
    }
    const rel = (t: number) => t - t0
    const events: Array<LogEvent> = procs.flatMap((p) => [
      ...p.dyno.events
        .filter((e) => e.event === "start" || e.event === "stop" || e.event === "signal")
        .map((e) => ({
          proc: p.name,
          event: e.event as LogEvent["event"],
          t: rel(e.t),
          slot: e.slot,
          payload: e.payload
        })),
      ...(p.killedAt === undefined ? [] : [{ proc: p.name, event: "killed" as const, t: rel(p.killedAt) }])
    ])
    const log: ChaosLog = {
      events,
      faults: faults.map((f) => ({ ...f, t: rel(f.t) })),
      signals: signals.map((s) => ({ ...s, sentAt: rel(s.sentAt), ackedAt: rel(s.ackedAt) })),
      end: rel(end)
    }
    const report = check(log, defaultPolicy(N))
    const file = `.tmp/chaos-log-${seed}.json`
    mkdirSync(".tmp", { recursive: true })
    writeFileSync(file, JSON.stringify({ seed, t0, ...log, intervals: report.intervals }, null, 1))
    for (const r of report.recoveries) {
      print(
        `${r.fault.kind} at ${r.fault.t} ms on ${r.fault.targets.join(",")}: ` +
          `victims [${r.victims.join(",")}] stopped after ${r.stoppedMs} ms, back to ${N} after ${r.ms} ms`
      )
    }
    print(`seed ${seed}; times in ms from the start; full log in ${file}\n${formatReport(report)}`)
    if (anomalies.length > 0) print(`anomalies:\n  ${anomalies.join("\n  ")}`)
    expect(anomalies).toEqual([])
    expect(report.violations).toEqual([])
    expect(faults.length).toBeGreaterThanOrEqual(4)
    expect(report.signals.stable).toBeGreaterThan(0)
  })

  // A standby cut off by the network leaves its watcher's backend behind on the server. The watcher waits with a
  // transaction-level shared lock and asks for the lock session's keepalives, so that backend can neither keep a
  // freed slot nor its watch ticket for long.
  it.skipIf(!namespacesUsable)(
    "a standby cut off by the network does not keep the slot blocked once the holder is gone",
    { timeout: 120_000 },
    async () => {
      const namespace = createNamespace("watch")
      if (typeof namespace === "string") throw new Error(`no network namespace: ${namespace}`)
      const dynos: Array<Dyno> = []
      let server: ThrowawayPostgres | undefined
      try {
        server = await startThrowawayPostgres({
          listen: `127.0.0.1,${namespace.hostAddress}`,
          hba: [`host all all ${namespace.subnet} scram-sha-256`]
        })
        const keyBase = uniqueKeyBase("cut standby")
        const inside = server.url.replace("@127.0.0.1:", `@${namespace.hostAddress}:`)
        const prefix = ["ip", "netns", "exec", namespace.name]
        const start = (name: string, url: string, through: ReadonlyArray<string> = []) => {
          const dyno = spawnDyno({ DATABASE_URL: url, KEY_BASE: keyBase, DYNOS: "1" }, name, through)
          dynos.push(dyno)
          return dyno
        }
        const ready = (dyno: Dyno) => () => dyno.events.some((e) => e.event === "ready")
        const holder = start("holder", inside, prefix)
        await waitFor("the holder to run", () => holder.running(), 60_000)
        // Its watcher now waits inside PostgreSQL for the holder's slot.
        const cutStandby = start("cut standby", inside, prefix)
        await waitFor("the standby in the namespace to be ready", ready(cutStandby), 60_000)
        const standby = start("standby", server.url)
        await waitFor("the other standby to be ready", ready(standby), 60_000)
        await sleep(2000)
        const cutAt = Date.now()
        namespace.cut()
        await waitFor("the cut holder to stop", () => !holder.running(), 15_000)
        // The server frees the holder's slot about 11 s after the cut; the bound of the chaos test is 20 s.
        await waitFor("the other standby to take the slot", () => standby.running(), cutAt + 20_000 - Date.now())
        expect(cutStandby.running()).toBe(false)
      } finally {
        for (const dyno of dynos) dyno.kill("SIGKILL")
        await Promise.all(dynos.map((dyno) => Promise.race([dyno.exited, sleep(5000)])))
        await server?.stop()
        namespace.remove()
      }
    }
  )
})

/**
 * 6. Scale: `processes` child processes each start `calls` background `exclusive` blocks on one key base with
 * 5 slots (200 contenders by default). Once the slots are taken, for `seconds`:
 * - the slots' holders are sampled from `pg_locks` every 100 ms: there must be exactly 5 at every sample,
 *   and the bodies' own start/stop events must never show more than 5 running;
 * - what the idle standbys cost the server: statements run over the window (from `pg_stat_statements`,
 *   without this benchmark's own), per second and per standby; with a server that does not load
 *   `pg_stat_statements`, the `xact_commit` delta instead, which is only roughly right.
 * Then a process that holds a slot is killed with `kill -9`, `kills` times (a fresh process replaces it
 * each time): the time until 5 bodies run again.
 */
import { Keys } from "../src/index.js"
import {
  type Child,
  type ChildEvent,
  type Context,
  count,
  killAndWait,
  now,
  type Outcome,
  rawClient,
  sleep,
  spawnChild,
  summary,
  uniqueKeyBase
} from "./support.js"

const processes = 4
const calls = 50
const dynos = 5
const kills = 3

/** Bodies running now in a live child: starts minus stops, per child. */
const runningIn = (child: Child) =>
  child.events.filter((e) => e.event === "start").length - child.events.filter((e) => e.event === "stop").length

/** The most bodies ever running at once, from every child's start/stop events on the shared clock. */
const maxConcurrent = (events: ReadonlyArray<ChildEvent>, killedAt: Map<number, number>) => {
  const changes: Array<[number, number]> = []
  for (const e of events) {
    if (e.event === "start") changes.push([e.t, 1])
    if (e.event === "stop") changes.push([e.t, -1])
  }
  // A killed process's bodies stop when it dies, without a stop event.
  for (const [pid, t] of killedAt) {
    const open = events.filter((e) => e.pid === pid && e.event === "start").length
    const closed = events.filter((e) => e.pid === pid && e.event === "stop").length
    if (open > closed) changes.push([t, closed - open])
  }
  changes.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let running = 0
  let max = 0
  for (const [, delta] of changes) {
    running += delta
    max = Math.max(max, running)
  }
  return max
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const seconds = count(ctx, 30, 5)
  const keyBase = uniqueKeyBase("scale")
  const keys = Array.from({ length: dynos }, (_, slot) => Keys.slotKey(keyBase, slot)[1])
  const admin = await rawClient(ctx.url, "bench admin")
  const children: Array<Child> = []
  const killedAt = new Map<number, number>()
  const start = () => {
    const child = spawnChild(ctx, "dyno", { KEY_BASE: keyBase, DYNOS: String(dynos), CALLS: String(calls) })
    children.push(child)
    return child
  }
  const live = () => children.filter((child) => !killedAt.has(child.process.pid ?? -1))
  const running = () => live().reduce((sum, child) => sum + runningIn(child), 0)
  const waitUntil = async (what: string, predicate: () => boolean, timeoutMs = 30_000) => {
    const deadline = Date.now() + timeoutMs
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`scale: timed out waiting for ${what}`)
      await sleep(2)
    }
  }
  const holdersQuery =
    "SELECT /* bench sampler */ count(*)::int AS n FROM pg_locks " +
    "WHERE locktype = 'advisory' AND mode = 'ExclusiveLock' AND granted " +
    "AND objsubid = 2 AND classid = $1::int4::oid AND objid = ANY($2::int4[]::oid[])"
  // Statements the server ran, from pg_stat_statements when it is loaded (the throwaway server loads it), else
  // from xact_commit, which a backend publishes up to 10 s late.
  const statementsSource = await admin
    .query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    .then(() => admin.query("SELECT 1 FROM pg_stat_statements LIMIT 1"))
    .then(
      () => "pg_stat_statements" as const,
      () => "xact_commit" as const
    )
  const statementCount = async () =>
    statementsSource === "pg_stat_statements"
      ? Number(
          (
            await admin.query(
              "SELECT /* bench sampler */ coalesce(sum(calls), 0)::int8 AS n FROM pg_stat_statements " +
                "WHERE query NOT LIKE '%bench sampler%' AND query NOT LIKE '%pg_stat_statements%'"
            )
          ).rows[0].n
        )
      : Number(
          (
            await admin.query(
              "SELECT /* bench sampler */ xact_commit::int8 AS n FROM pg_stat_database " +
                "WHERE datname = current_database()"
            )
          ).rows[0].n
        )
  // Statements that try locks: the standbys' polls (and the watchers' tickets), one per round trip.
  const lockTries = async () =>
    statementsSource === "pg_stat_statements"
      ? Number(
          (
            await admin.query(
              "SELECT /* bench sampler */ coalesce(sum(calls), 0)::int8 AS n FROM pg_stat_statements " +
                "WHERE query LIKE '%pg_try_advisory_lock%' AND query NOT LIKE '%bench sampler%'"
            )
          ).rows[0].n
        )
      : Number.NaN
  const topStatements = async () =>
    statementsSource === "pg_stat_statements"
      ? (
          await admin.query(
            "SELECT /* bench sampler */ calls::int8 AS calls, left(query, 120) AS query FROM pg_stat_statements " +
              "WHERE query NOT LIKE '%bench sampler%' AND query NOT LIKE '%pg_stat_statements%' " +
              "ORDER BY calls DESC LIMIT 8"
          )
        ).rows
      : []
  try {
    for (let i = 0; i < processes; i++) start()
    await Promise.all(children.map((child) => child.next("ready", 60_000)))
    await waitUntil("5 bodies running", () => running() === dynos)
    await sleep(2000)
    const connections = (
      await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name LIKE 'the-lone-dyno%'")
    ).rows[0].n as number
    const samples: Array<number> = []
    if (statementsSource === "pg_stat_statements") await admin.query("SELECT pg_stat_statements_reset()")
    const before = await statementCount()
    const t0 = now()
    while (now() - t0 < seconds * 1000) {
      const tick = now()
      samples.push((await admin.query(holdersQuery, [Keys.slotKeySpace, keys])).rows[0].n as number)
      await sleep(Math.max(0, 100 - (now() - tick)))
    }
    const elapsed = (now() - t0) / 1000
    const after = await statementCount()
    const tries = (await lockTries()) / ((now() - t0) / 1000)
    const top = await topStatements()
    // With xact_commit our own statements count too: one per sample and the closing read.
    const own = statementsSource === "pg_stat_statements" ? 0 : samples.length + 1
    const statements = (after - before - own) / elapsed
    const standbys = processes * calls - dynos
    const takeovers: Array<number> = []
    const slotsFreed: Array<number> = []
    for (let k = 0; k < kills; k++) {
      const victim = live().find((child) => runningIn(child) > 0)!
      slotsFreed.push(runningIn(victim))
      const t = now()
      victim.kill("SIGKILL")
      killedAt.set(victim.process.pid ?? -1, t)
      await waitUntil("5 bodies running after a kill", () => running() === dynos, 20_000)
      const starts = live()
        .flatMap((child) => child.events)
        .filter((e) => e.event === "start" && e.t >= t)
      takeovers.push(Math.max(...starts.map((e) => e.t)) - t)
      await victim.exited
      const replacement = start()
      await replacement.next("ready", 60_000)
      await sleep(1000)
    }
    const wrong = samples.filter((n) => n !== dynos).length
    const most = maxConcurrent(
      children.flatMap((child) => child.events),
      killedAt
    )
    const takeover = summary(takeovers)
    return {
      rows: [
        {
          benchmark: "scale",
          metric:
            `${processes * calls} contenders / ${processes} processes / ${dynos} slots: ` +
            `samples with exactly ${dynos} holders`,
          unit: "",
          library: `${samples.length - wrong}/${samples.length}`,
          target: "all",
          pass: wrong === 0 && most <= dynos
        },
        {
          benchmark: "scale",
          metric: `statements/s for ${standbys} idle standbys, per standby`,
          unit: "/s",
          library: statements / standbys,
          target: "<= 1",
          pass: statements / standbys <= 1
        },
        {
          benchmark: "scale",
          metric: "of which lock tries (polls), per standby",
          unit: "/s",
          library: tries / standbys
        },
        {
          benchmark: "scale",
          metric: `kill -9 of a holding process -> ${dynos} run again, max of ${kills}`,
          unit: "ms",
          library: takeover.max,
          target: "< 250 ms",
          pass: takeover.max < 250
        }
      ],
      details: {
        processes,
        callsPerProcess: calls,
        dynos,
        windowSeconds: elapsed,
        samples: samples.length,
        samplesNotExactly: wrong,
        holderCounts: [...new Set(samples)],
        maxBodiesRunningAtOnce: most,
        statementsSource,
        statementsPerSecond: statements,
        topStatements: top,
        statementsPerSecondPerStandby: statements / standbys,
        lockTriesPerSecond: tries,
        libraryConnections: connections,
        takeoversMs: takeovers,
        slotsFreedByEachKill: slotsFreed
      }
    }
  } finally {
    await killAndWait(children)
    await admin.end()
  }
}

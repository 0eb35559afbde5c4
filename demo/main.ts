/**
 * `npm start`: four simulated web dynos compete for one slot, as real child processes.
 *
 * Watch one of them win, the others stand by, a signal reach the holder, a standby take over when the holder
 * is killed, and everyone release on SIGTERM. Uses the PostgreSQL at DATABASE_URL, or a throwaway one.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { PgClient } from "@effect/sql-pg"
import { Layer, ManagedRuntime, Redacted } from "effect"
import pg from "pg"
import { LoneDyno } from "the-lone-dyno"
import { bundle } from "../test/support/bundle.js"
import { startThrowawayPostgres, type ThrowawayPostgres } from "../test/support/postgres.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const bundleDir = join(root, ".tmp", `demo-${process.pid}`)
const keyBase = `the-lone-dyno demo ${process.pid}`
const names = ["web.1", "web.2", "web.3", "web.4"]
const began = Date.now()

interface Event {
  readonly event: string
  readonly t: number
  readonly slot?: number
  readonly payload?: string
  readonly state?: string
  readonly cause?: string
}

interface Dyno {
  readonly name: string
  readonly child: ChildProcess
  readonly stderr: Array<string>
  readonly exited: Promise<number | null>
  state: string | undefined
  holding: boolean
  announced: boolean
  readonly received: Array<string>
}

let quiet = false
const say = (who: string, text: string) => {
  if (quiet) return
  const seconds = ((Date.now() - began) / 1000).toFixed(2).padStart(5)
  process.stdout.write(`${seconds}s  ${who.padEnd(5)}  ${text}\n`)
}

const dynos: Array<Dyno> = []
let server: ThrowawayPostgres | undefined
let runtime: ManagedRuntime.ManagedRuntime<LoneDyno.LoneDyno, unknown> | undefined
let killedAt: number | undefined
let firstHolder = false

const announceStandby = (dyno: Dyno) => {
  if (!firstHolder || dyno.announced || dyno.holding || dyno.state !== "Standby") return
  dyno.announced = true
  say(dyno.name, "· standing by")
}

const onEvent = (dyno: Dyno, event: Event) => {
  switch (event.event) {
    case "state":
      dyno.state = event.state
      announceStandby(dyno)
      return
    case "start": {
      dyno.holding = true
      const takeover = killedAt === undefined ? "" : `  (took over ${event.t - killedAt} ms after the kill)`
      say(dyno.name, `★ holds slot ${event.slot}${takeover}`)
      if (!firstHolder) {
        firstHolder = true
        for (const other of dynos) announceStandby(other)
      }
      return
    }
    case "signal":
      dyno.received.push(event.payload ?? "")
      say(dyno.name, `✉ received ${JSON.stringify(event.payload)}`)
      return
    case "stop":
      dyno.holding = false
      say(dyno.name, `■ block interrupted, releasing slot ${event.slot}`)
      return
    case "error":
      say(dyno.name, `failed: ${event.cause?.split("\n")[0]}`)
  }
}

const launch = (name: string, script: string, databaseUrl: string): Dyno => {
  const child = spawn(process.execPath, [script], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: databaseUrl, DYNO: name, KEY_BASE: keyBase },
    stdio: ["ignore", "pipe", "pipe", "ipc"]
  })
  const dyno: Dyno = {
    name,
    child,
    stderr: [],
    exited: new Promise((resolve) => child.on("exit", (code) => resolve(code))),
    state: undefined,
    holding: false,
    announced: false,
    received: []
  }
  let buffer = ""
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffer += chunk
    for (let newline = buffer.indexOf("\n"); newline >= 0; newline = buffer.indexOf("\n")) {
      const line = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      if (line.startsWith("@@ ")) onEvent(dyno, JSON.parse(line.slice(3)) as Event)
    }
  })
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => dyno.stderr.push(chunk))
  return dyno
}

const alive = (dyno: Dyno) => dyno.child.exitCode === null && dyno.child.signalCode === null

/** Waits until `ready` holds, saying so every two seconds; fails after `timeoutMs`. */
const waitFor = async (what: string, ready: () => boolean, timeoutMs = 10_000) => {
  const start = Date.now()
  let nextNote = start + 2000
  while (!ready()) {
    if (dynos.length > 0 && !dynos.some(alive)) throw new Error(`every dyno exited while waiting for ${what}`)
    const now = Date.now()
    if (now - start > timeoutMs) throw new Error(`gave up after ${timeoutMs / 1000} s waiting for ${what}`)
    if (now > nextNote) {
      say("demo", `… still waiting for ${what} (${Math.round((now - start) / 1000)} s)`)
      nextNote += 2000
    }
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** Runs a slow step, printing a dot every half second until it is done. */
const step = async <A>(what: string, work: Promise<A>): Promise<A> => {
  const start = Date.now()
  process.stdout.write(`${((start - began) / 1000).toFixed(2).padStart(5)}s  demo   ${what} `)
  const dots = setInterval(() => process.stdout.write("."), 500)
  try {
    const result = await work
    process.stdout.write(` done in ${((Date.now() - start) / 1000).toFixed(1)} s\n`)
    return result
  } finally {
    clearInterval(dots)
  }
}

/** Removes the bundles of earlier runs that were killed before they could clean up. */
const sweep = () => {
  const dir = join(root, ".tmp")
  const names = (() => {
    try {
      return readdirSync(dir)
    } catch {
      return []
    }
  })()
  for (const name of names) {
    const pid = Number(/^demo-(\d+)$/.exec(name)?.[1])
    if (pid > 0 && pid !== process.pid && !running(pid)) rmSync(join(dir, name), { recursive: true, force: true })
  }
}

const running = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM"
  }
}

/** Fails with the driver's own words when the server cannot be reached, before any dyno is started. */
const reachable = async (url: string) => {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000 })
  try {
    await client.connect()
  } catch (error) {
    throw new Error(`cannot reach PostgreSQL: ${error instanceof Error ? error.message : String(error)}`)
  } finally {
    await client.end().catch(() => undefined)
  }
}

const holders = () => runtime!.runPromise(LoneDyno.holders({ keyBase }))

const signal = async (to: Dyno, payload: string) => {
  const reached = await runtime!.runPromise(LoneDyno.signal(payload, { keyBase }))
  say("demo", `→ LoneDyno.signal(${JSON.stringify(payload)}) reached ${reached} holder${reached === 1 ? "" : "s"}`)
  await waitFor(`${to.name} to receive the signal`, () => to.received.includes(payload))
}

/** A short pause between the acts, so a reader can follow the log. */
const pause = () => new Promise((resolve) => setTimeout(resolve, 400))

const holder = () => dynos.find((dyno) => dyno.holding && alive(dyno))

const main = async () => {
  process.stdout.write(`the-lone-dyno demo: ${names.length} web dynos, 1 slot\n\n`)
  let databaseUrl = process.env.DATABASE_URL ?? ""
  if (databaseUrl === "") {
    server = await step("starting a throwaway PostgreSQL (set DATABASE_URL to use yours)", startThrowawayPostgres())
    databaseUrl = server.url
  } else {
    say("demo", "using the PostgreSQL at DATABASE_URL")
  }
  runtime = ManagedRuntime.make(
    LoneDyno.layer().pipe(Layer.provide(PgClient.layer({ url: Redacted.make(databaseUrl), maxConnections: 1 })))
  )
  await reachable(databaseUrl)
  sweep()
  await step("bundling demo/dyno.ts", bundle([join(root, "demo", "dyno.ts")], bundleDir))

  say("demo", `launching ${names.join(", ")} as child processes, each running LoneDyno.exclusive`)
  for (const name of names) dynos.push(launch(name, join(bundleDir, "dyno.mjs"), databaseUrl))
  await waitFor("a dyno to take the slot", () => holder() !== undefined)
  await waitFor("the others to stand by", () => dynos.every((dyno) => dyno.holding || dyno.announced))
  const [held] = await holders()
  say("demo", `LoneDyno.holders(): slot 0 is held by "${held?.applicationName}"`)

  const first = holder()!
  await pause()
  await signal(first, "hi ho silver!")

  await pause()
  killedAt = Date.now()
  first.child.kill("SIGKILL")
  say("demo", `✕ kill -9 ${first.name} (pid ${first.child.pid}), the holder`)
  await waitFor("a standby to take over", () => holder() !== undefined && holder() !== first)
  const second = holder()!
  await pause()
  await signal(second, "who's there?")
  await pause()

  const rest = dynos.filter(alive)
  say("demo", `SIGTERM to ${rest.map((dyno) => dyno.name).join(", ")}, as Heroku does on a restart`)
  for (const dyno of rest) dyno.child.kill("SIGTERM")
  for (const dyno of rest) {
    await waitFor(`${dyno.name} to exit`, () => !alive(dyno), 8000)
    say(dyno.name, `exited with code ${dyno.child.exitCode}`)
  }
  const free = (await holders()).every((slot) => !slot.held)
  say("demo", free ? "LoneDyno.holders(): slot 0 is free, nobody holds it" : "slot 0 is still held!")
  if (!free) throw new Error("the slot was not released")
}

let cleaning: Promise<void> | undefined
/** Stops whatever is still running: the dynos, the demo's own connections, PostgreSQL. Runs once. */
const cleanup = () => {
  cleaning ??= (async () => {
    for (const dyno of dynos) if (alive(dyno)) dyno.child.kill("SIGKILL")
    await Promise.all(dynos.map((dyno) => dyno.exited))
    await runtime?.dispose().catch(() => undefined)
    rmSync(bundleDir, { recursive: true, force: true })
    if (server !== undefined) await step("stopping PostgreSQL", server.stop())
  })()
  return cleaning
}

// Listeners stay installed: under `npm start` a Ctrl-C arrives twice (from the terminal, and relayed by tsx),
// and a second one without a listener would end the process before the cleanup.
const stopped = new Promise<number>((resolve) => {
  let interrupted = false
  const stop = (code: number) => () => {
    if (interrupted) return
    interrupted = true
    process.stdout.write("\ninterrupted; stopping the dynos and PostgreSQL\n")
    resolve(code)
  }
  process.on("SIGINT", stop(130))
  process.on("SIGTERM", stop(143))
  setTimeout(() => {
    process.stdout.write("\nthe demo took longer than 25 s; giving up\n")
    resolve(1)
  }, 25_000).unref()
})

const outcome = await Promise.race([
  main().then(
    () => 0,
    (error: unknown) => {
      process.stdout.write(`\nthe demo failed: ${error instanceof Error ? error.message : String(error)}\n`)
      for (const dyno of dynos) {
        const text = dyno.stderr.join("").trim()
        if (text !== "") process.stdout.write(`\n${dyno.name} stderr:\n${text}\n`)
      }
      return 1
    }
  ),
  stopped
])
quiet = outcome !== 0
await cleanup()
if (outcome === 0) say("demo", `done in ${((Date.now() - began) / 1000).toFixed(1)} s; nothing left running`)
process.exit(outcome)

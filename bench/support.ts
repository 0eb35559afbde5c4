/**
 * Shared pieces of the benchmarks: statistics, clocks, child processes and the result rows.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { PgClient } from "@effect/sql-pg"
import { Layer, Logger, LogLevel, Redacted } from "effect"
import pg from "pg"
import { LoneDyno, type LoneDynoConfig } from "../src/index.js"

export const root = fileURLToPath(new URL("..", import.meta.url))

/** Milliseconds since the epoch with sub-millisecond resolution, comparable across processes. */
export const now = () => performance.timeOrigin + performance.now()

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export interface Context {
  readonly url: string
  /** Folder with the bundled child programs, `<name>.mjs`. */
  readonly childrenDir: string
  /** Scales the number of iterations/trials (`--scale=0.2` for a quick run). */
  readonly scale: number
}

export const count = (ctx: Context, n: number, min = 1) => Math.max(min, Math.round(n * ctx.scale))

export const percentile = (values: ReadonlyArray<number>, p: number) => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))
  return sorted[index]!
}

export const summary = (values: ReadonlyArray<number>) => ({
  n: values.length,
  p50: percentile(values, 50),
  p99: percentile(values, 99),
  max: values.length === 0 ? Number.NaN : Math.max(...values),
  min: values.length === 0 ? Number.NaN : Math.min(...values)
})

/** One line of the results table. `ratio` is library / raw; `pass` is undefined when there is no target. */
export interface Row {
  readonly benchmark: string
  readonly metric: string
  readonly unit: string
  readonly library: number | string
  readonly raw?: number | string | undefined
  readonly ratio?: number | undefined
  readonly target?: string | undefined
  readonly pass?: boolean | undefined
}

export interface Outcome {
  readonly rows: ReadonlyArray<Row>
  /** Every figure measured, for the JSON file. */
  readonly details: Record<string, unknown>
}

export const ratio = (library: number, raw: number) => (raw > 0 ? library / raw : undefined)

let counter = 0
export const uniqueKeyBase = (label: string) => `bench ${label} ${process.pid}-${Date.now()}-${counter++}`

/** A plain node-postgres client, connected, with an error listener (mandatory: a terminated backend emits one). */
export const rawClient = async (url: string, applicationName = "bench raw") => {
  const client = new pg.Client({ connectionString: url, application_name: applicationName })
  client.on("error", () => undefined)
  await client.connect()
  return client
}

/** The library with its defaults (or `options`), over a small pool, logging warnings and worse to stderr. */
export const libraryLayer = (
  url: string,
  options: LoneDynoConfig.LoneDynoOptions = {},
  maxConnections = 4,
  logLevel: LogLevel.LogLevel = LogLevel.Warning
) =>
  LoneDyno.layer(options).pipe(
    Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections })),
    Layer.provide(Logger.minimumLogLevel(logLevel)),
    Layer.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger)))
  )

export interface ChildEvent {
  readonly event: string
  readonly pid: number
  readonly t: number
  readonly [key: string]: unknown
}

export interface Child {
  readonly process: ChildProcess
  readonly events: Array<ChildEvent>
  readonly stderr: Array<string>
  readonly exited: Promise<void>
  /** Resolves with the first event named `event` (already seen or still to come). */
  readonly next: (event: string, timeoutMs?: number, after?: number) => Promise<ChildEvent>
  readonly kill: (signal?: NodeJS.Signals) => void
}

/** Starts a bundled child program; it prints events as `@@ {json}` lines on stdout. */
export const spawnChild = (
  ctx: Context,
  name: string,
  env: Record<string, string | undefined>,
  nodeArgs: ReadonlyArray<string> = []
): Child => {
  const child = spawn(process.execPath, [...nodeArgs, `${ctx.childrenDir}/${name}.mjs`], {
    cwd: root,
    env: { ...process.env, DYNO: undefined, DATABASE_URL: ctx.url, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const events: Array<ChildEvent> = []
  const stderr: Array<string> = []
  const waiters: Array<() => void> = []
  let buffer = ""
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffer += chunk
    let newline = buffer.indexOf("\n")
    while (newline >= 0) {
      const line = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      if (line.startsWith("@@ ")) events.push(JSON.parse(line.slice(3)) as ChildEvent)
      newline = buffer.indexOf("\n")
    }
    for (const waiter of waiters.splice(0)) waiter()
  })
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr.push(chunk)
    if (stderr.length > 200) stderr.shift()
  })
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
  const next = (event: string, timeoutMs = 30_000, after = 0) =>
    new Promise<ChildEvent>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`${name}: no "${event}" event within ${timeoutMs} ms\n${stderr.join("").slice(-2000)}`))
      }, timeoutMs)
      const check = () => {
        const found = events.find((e) => e.event === event && e.t >= after)
        if (found !== undefined) {
          clearTimeout(timer)
          resolve(found)
        } else {
          waiters.push(check)
        }
      }
      check()
    })
  return {
    process: child,
    events,
    stderr,
    exited,
    next,
    kill: (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    }
  }
}

export const killAndWait = async (children: ReadonlyArray<Child>) => {
  for (const child of children) child.kill("SIGKILL")
  await Promise.all(children.map((child) => child.exited))
}

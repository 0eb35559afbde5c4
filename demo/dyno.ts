/**
 * One simulated dyno of the `npm start` demo: it runs a single `LoneDyno.exclusive` block and reports what
 * happens to it as `@@ {json}` lines on stdout, which `demo/main.ts` turns into a readable log.
 *
 * Environment: DATABASE_URL, DYNO (web.1, web.2, ...), KEY_BASE.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel, Redacted, Stream } from "effect"
import { LoneDyno } from "the-lone-dyno"

const report = (event: string, fields: Record<string, unknown> = {}) =>
  Effect.sync(() => process.stdout.write(`@@ ${JSON.stringify({ event, ...fields, t: Date.now() })}\n`))

const program = Effect.gen(function* () {
  const handle = yield* LoneDyno.exclusive(
    (signal) =>
      Effect.gen(function* () {
        yield* report("start", { slot: signal.slot })
        yield* signal.watch().pipe(Stream.runForEach((payload) => report("signal", { slot: signal.slot, payload })))
      }).pipe(Effect.onInterrupt(() => report("stop", { slot: signal.slot }))),
    { keyBase: process.env.KEY_BASE }
  )
  yield* handle.changes.pipe(
    Stream.runForEach((state) => report("state", { state: state._tag })),
    Effect.forkScoped
  )
  yield* Effect.never
})

// The driver talks to this process over an IPC channel; if the driver dies, stop as Heroku would stop a dyno.
process.on("disconnect", () => process.kill(process.pid, "SIGTERM"))

const Postgres = PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL ?? ""), maxConnections: 1 })
// A short standby interval keeps the demo snappy; the default is 1 second.
const Live = LoneDyno.layer({ standbyInterval: "250 millis" }).pipe(Layer.provide(Postgres))

program.pipe(
  Effect.scoped,
  Effect.provide(Live),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  Effect.tapErrorCause((cause) => report("error", { cause: String(cause) })),
  NodeRuntime.runMain
)

/**
 * A dyno for the benchmarks: `CALLS` background `exclusive` blocks (default 1) on one key base, with the
 * library's default settings. Prints `boot`, `ready`, and `start`/`stop` per block with its slot and call.
 *
 *   DATABASE_URL, KEY_BASE, DYNOS (default 1), CALLS (default 1)
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel, Redacted } from "effect"
import { LoneDyno } from "../../src/index.js"
import { emit } from "./emit.js"

const env = process.env
const keyBase = env.KEY_BASE ?? "bench"
const dynos = Number(env.DYNOS ?? "1")
const calls = Number(env.CALLS ?? "1")

const program = Effect.gen(function* () {
  emit({ event: "boot" })
  for (let call = 0; call < calls; call++) {
    yield* LoneDyno.exclusive(
      (signal) =>
        Effect.sync(() => emit({ event: "start", slot: signal.slot, call })).pipe(
          Effect.zipRight(Effect.never),
          Effect.onInterrupt(() => Effect.sync(() => emit({ event: "stop", slot: signal.slot, call })))
        ),
      { keyBase, dynos }
    )
  }
  emit({ event: "ready" })
  yield* Effect.never
})

const Postgres = PgClient.layer({ url: Redacted.make(env.DATABASE_URL ?? ""), maxConnections: 2 })
program.pipe(
  Effect.scoped,
  Effect.provide(LoneDyno.layer().pipe(Layer.provide(Postgres))),
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
  Logger.withMinimumLogLevel(LogLevel.Warning),
  NodeRuntime.runMain
)

/**
 * Restricting a block to one process type, read from `$DYNO` (Heroku sets it: web.1, worker.3, ...).
 *
 *   DYNO=worker.1 DATABASE_URL=postgres://localhost/mydb npx tsx examples/process-type.ts
 *   DYNO=web.1 DATABASE_URL=postgres://localhost/mydb npx tsx examples/process-type.ts
 *
 * `processType` is a substring of `$DYNO` ("worker"), a RegExp (/^worker\.\d+$/), or `false` to let every
 * process take part. The default is a `$DYNO` that starts with "web". When `$DYNO` is not set (your laptop),
 * the check is skipped and the process takes part.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule } from "effect"
import { LoneDyno } from "the-lone-dyno"

const program = Effect.gen(function* () {
  const handle = yield* LoneDyno.exclusive(
    () => Console.log("Code you only want to run on 1 worker dyno").pipe(Effect.repeat(Schedule.spaced("2 seconds"))),
    { processType: "worker", keyBase: "worker chores" }
  )
  const state = yield* handle.state
  if (state._tag === "Skipped") {
    yield* Console.log(`This process does not take part: ${state.reason}`)
    return
  }
  yield* Effect.never
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

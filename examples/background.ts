/**
 * A background block: it runs on one process of the fleet, and the rest of the app goes on at once.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/background.ts
 *
 * Start it in a second terminal too: that one stands by, and takes over within milliseconds when you stop
 * the first (Ctrl-C releases the slot; so does killing it).
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule } from "effect"
import { LoneDyno } from "the-lone-dyno"

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(() =>
    Console.log("bump-ba-da-bump-ba-da-bump").pipe(Effect.repeat(Schedule.spaced("1 second")))
  )
  yield* Console.log("Does not block future code execution")
  yield* Effect.never
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

// The block lives as long as the scope: until the process gets SIGTERM or Ctrl-C.
program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

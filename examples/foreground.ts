/**
 * A foreground block (`background: false`): the caller waits while it runs, and learns whether it ran.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/foreground.ts
 *
 * The slot is held only while the block runs and released right after, so keep foreground blocks for work
 * that must not overlap (a migration, a nightly job), not for short tasks that any process may pick up.
 * `wait` keeps trying for a free slot for that long; without it, one try.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Option, Schedule } from "effect"
import { LoneDyno } from "the-lone-dyno"

const program = Effect.gen(function* () {
  const result = yield* LoneDyno.exclusive(
    () =>
      Console.log("bump-ba-da-bump-ba-da-bump").pipe(
        Effect.repeat({ schedule: Schedule.spaced("1 second"), times: 2 }),
        Effect.as("three beats")
      ),
    { background: false, wait: "5 seconds" }
  )
  yield* Console.log("Does block execution: this line waits for the block")
  yield* Option.match(result, {
    onNone: () => Console.log("Another process held the slot for 5 seconds; the block did not run"),
    onSome: (value) => Console.log(`The block ran and returned: ${value}`)
  })
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.provide(Live), NodeRuntime.runMain)

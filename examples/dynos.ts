/**
 * Running a block on up to N processes at once: `dynos: 3` gives slots 0, 1 and 2.
 *
 *   DYNO=web.1 DATABASE_URL=postgres://localhost/mydb npx tsx examples/dynos.ts
 *
 * Start it in four terminals (DYNO=web.1 to web.4): three hold a slot each, the fourth stands by. Every few
 * seconds each one prints who holds what, as `LoneDyno.holders` sees it.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule } from "effect"
import { LoneDyno } from "the-lone-dyno"

const options = { dynos: 3, keyBase: "canary" }

const showHolders = LoneDyno.holders(options).pipe(
  Effect.flatMap((slots) =>
    Console.log(slots.map((slot) => `slot ${slot.slot}: ${slot.held ? slot.applicationName : "free"}`).join("  |  "))
  )
)

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(
    (signal) =>
      Effect.zipRight(Console.log(`This process holds slot ${signal.slot} of ${options.dynos}`), Effect.never),
    options
  )
  yield* showHolders.pipe(Effect.delay("1 second"), Effect.repeat(Schedule.spaced("4 seconds")))
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

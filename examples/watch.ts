/**
 * Signals: the process that holds the slot watches for payloads, and anyone may send them.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/watch.ts
 *
 * This file also sends a payload every two seconds, to have something to watch. Any other process can send
 * too: `LoneDyno.signal` from a console, `npx the-lone-dyno signal "hi ho silver!" --key-base "reticulate splines"`,
 * or `pg_notify` from psql (see the README). Each holder gets each payload once; standbys get nothing.
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule, Stream } from "effect"
import { LoneDyno } from "the-lone-dyno"

const keyBase = "reticulate splines"

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(
    (signal) =>
      signal
        .watch()
        .pipe(Stream.runForEach((payload) => Console.log(`I only get called when I receive the signal: ${payload}`))),
    { keyBase }
  )
  yield* Stream.fromSchedule(Schedule.spaced("2 seconds")).pipe(
    Stream.runForEach((n) =>
      LoneDyno.signal(`hi ho silver! #${n + 1}`, { keyBase }).pipe(
        Effect.flatMap((holders) => Console.log(`Sent "hi ho silver! #${n + 1}" to ${holders} holder(s)`))
      )
    )
  )
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

/**
 * Signals on a schedule, as the Ruby gem delivers them: wake every `sleep`, wait up to `ttl` for a payload,
 * then hand over everything that arrived. Nothing queued is dropped.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/watch-sleep-ttl.ts
 *
 * A payload is sent every second; the block wakes every 5 seconds and gets the five that queued up at once.
 * Without options, `watch()` pushes each payload the moment it arrives (see watch.ts).
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule, Stream } from "effect"
import { LoneDyno } from "the-lone-dyno"

const keyBase = "reticulate splines"
const clock = () => new Date().toISOString().slice(11, 19)

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(
    (signal) =>
      signal
        .watch({ sleep: "5 seconds", ttl: "0 millis" })
        .pipe(Stream.runForEach((payload) => Console.log(`${clock()} received: ${payload}`))),
    { keyBase }
  )
  yield* Stream.fromSchedule(Schedule.spaced("1 second")).pipe(
    Stream.runForEach((n) =>
      LoneDyno.signal(`ping ${n + 1}`, { keyBase }).pipe(Effect.zipRight(Console.log(`${clock()} sent: ping ${n + 1}`)))
    )
  )
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

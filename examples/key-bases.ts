/**
 * Two independent blocks in one app: each key base is its own set of slots, so they do not exclude each
 * other. Here one block runs on 1 process and the other on up to 42.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/key-bases.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer, Schedule } from "effect"
import { LoneDyno } from "the-lone-dyno"

const every = (text: string) => Console.log(text).pipe(Effect.repeat(Schedule.spaced("2 seconds")))

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(() => every("Reticulating splines"), { keyBase: "reticulate splines" })
  yield* LoneDyno.exclusive(() => every("Extrapolating conclusions"), {
    dynos: 42,
    keyBase: "extrapolate conclusions"
  })
  yield* Effect.never
})

const Postgres = PgClient.layerConfig({ url: Config.redacted("DATABASE_URL") })
const Live = LoneDyno.layer().pipe(Layer.provide(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

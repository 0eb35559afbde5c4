/**
 * Supplying the connection. The library uses the app's `PgClient` from `@effect/sql-pg`: signals and
 * `holders` go through its pool, and the lock session (one dedicated connection per process, which holds the
 * advisory locks and LISTENs) is opened with the same settings.
 *
 *   DATABASE_URL=postgres://localhost/mydb npx tsx examples/connection-layer.ts
 *
 * Behind PgBouncer in transaction mode, session locks and LISTEN break, so give the lock session a direct URL.
 * `LoneDyno.layerConfig()` reads it from LONE_DYNO_URL (and the other LONE_DYNO_* variables); in code, pass
 * the `url` option to `LoneDyno.layer`.
 *
 *   DATABASE_URL=postgres://pgbouncer:6432/mydb LONE_DYNO_URL=postgres://db:5432/mydb \
 *     npx tsx examples/connection-layer.ts
 */
import { NodeRuntime } from "@effect/platform-node"
import { PgClient } from "@effect/sql-pg"
import { Config, Console, Effect, Layer } from "effect"
import { LoneDyno } from "the-lone-dyno"

const program = Effect.gen(function* () {
  yield* LoneDyno.exclusive(() =>
    Effect.gen(function* () {
      const sql = yield* PgClient.PgClient
      const [row] = yield* sql<{ database: string }>`SELECT current_database() AS database`
      yield* Console.log(`Holding the slot; the app's own queries still use its pool (database ${row?.database})`)
    })
  )
  yield* Effect.never
})

// The app's pool, from the environment.
const Postgres = PgClient.layerConfig({
  url: Config.redacted("DATABASE_URL"),
  maxConnections: Config.integer("DATABASE_POOL_SIZE").pipe(Config.withDefault(10))
})
// The library, with its options from LONE_DYNO_* variables, on top of the pool; the program sees both.
const Live = LoneDyno.layerConfig().pipe(Layer.provideMerge(Postgres))

program.pipe(Effect.scoped, Effect.provide(Live), NodeRuntime.runMain)

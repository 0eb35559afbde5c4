/**
 * Footprint of one process: memory before and after starting 3 `exclusive` blocks that each watch their
 * signals (MODE=library), or a raw client holding 3 locks and listening on 3 channels (MODE=raw).
 * The app's own `PgClient` is built before the first measurement in both modes, as an app would have it.
 * Prints `before` and `after` with `process.memoryUsage()` after a full GC, then `holding`; stays up.
 *
 *   DATABASE_URL, KEY_BASE, APP_NAME (application_name of the app's pool), MODE
 */
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Logger, LogLevel, Redacted, Stream } from "effect"
import pg from "pg"
import { Keys, LoneDyno } from "../../src/index.js"
import { emit } from "./emit.js"

const env = process.env
const keyBase = env.KEY_BASE ?? "bench footprint"
const url = env.DATABASE_URL ?? ""

const memory = (event: string) => {
  for (let i = 0; i < 3; i++) globalThis.gc?.()
  emit({ event, memory: process.memoryUsage() })
}

const Postgres = PgClient.layer({ url: Redacted.make(url), maxConnections: 4, applicationName: env.APP_NAME })

const library = Effect.gen(function* () {
  yield* PgClient.PgClient
  yield* Effect.sleep("200 millis")
  memory("before")
  const context = yield* Layer.build(LoneDyno.layer())
  const handles = []
  for (let i = 0; i < 3; i++) {
    const handle = yield* LoneDyno.exclusive(
      (signal) =>
        signal.watch().pipe(
          Stream.runForEach((payload) => Effect.sync(() => emit({ event: "signal", payload }))),
          Effect.zipRight(Effect.never)
        ),
      { keyBase: `${keyBase} ${i}` }
    ).pipe(Effect.provide(context))
    handles.push(handle)
  }
  emit({ event: "started" })
  for (const handle of handles) yield* handle.awaitSlot
  yield* Effect.sleep("500 millis")
  memory("after")
  emit({ event: "holding" })
  yield* Effect.never
})

const raw = Effect.gen(function* () {
  yield* PgClient.PgClient
  yield* Effect.sleep("200 millis")
  memory("before")
  yield* Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url, application_name: `bench raw footprint ${process.pid}` })
    client.on("error", () => undefined)
    client.on("notification", (message) => emit({ event: "signal", payload: message.payload }))
    await client.connect()
    for (let i = 0; i < 3; i++) {
      const [a, b] = Keys.slotKey(`${keyBase} ${i}`, 0)
      await client.query("SELECT pg_advisory_lock($1::int4, $2::int4)", [a, b])
      await client.query(`LISTEN "${Keys.slotChannel(`${keyBase} ${i}`, 0)}"`)
    }
    return client
  })
  yield* Effect.sleep("500 millis")
  memory("after")
  emit({ event: "holding" })
  yield* Effect.never
})

Effect.runFork(
  (env.MODE === "raw" ? raw : library).pipe(
    Effect.scoped,
    Effect.provide(Postgres),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(LogLevel.Warning)
  )
)

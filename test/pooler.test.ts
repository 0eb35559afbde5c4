import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer, Option } from "effect"
import { LoneDyno } from "../src/index.js"
import { databaseUrl, loneDyno, uniqueKeyBase } from "./support/layer.js"
import { pgbouncerBinary, startPgBouncer } from "./support/pgbouncer.js"

const binary = pgbouncerBinary()
if (binary === undefined) {
  // Stated plainly in the run's output rather than passing silently.
  process.stderr.write(
    "pooler.test.ts: pgbouncer is not installed (apt-get install pgbouncer); its tests are skipped\n"
  )
}

describe.skipIf(binary === undefined)("connection poolers", () => {
  const bouncer = (mode: "session" | "transaction") =>
    Effect.acquireRelease(
      Effect.promise(() => startPgBouncer(binary!, databaseUrl(), mode)),
      (b) => Effect.promise(() => b.stop())
    )

  it.live("a lock session through PgBouncer in transaction mode is refused with the fix in the message", () =>
    Effect.gen(function* () {
      const { url } = yield* bouncer("transaction")
      const keyBase = uniqueKeyBase("pooler")
      const service = yield* Layer.build(loneDyno({ url }))
      const error = yield* LoneDyno.exclusive(() => Effect.succeed("ran"), { keyBase, background: false }).pipe(
        Effect.provide(service),
        Effect.flip
      )
      expect(error._tag).toBe("LoneDynoSessionError")
      expect((error as { reason: string }).reason).toBe("Pooler")
      expect(error.message).toMatch(/url/)
      expect(error.message).toMatch(/allowPooler/)
      const handle = yield* LoneDyno.exclusive(() => Effect.never, { keyBase }).pipe(Effect.provide(service))
      const failed = yield* Effect.flip(handle.awaitSlot)
      expect(failed.reason).toBe("Pooler")
      expect((yield* handle.state)._tag).toBe("Failed")
    }).pipe(Effect.scoped)
  )

  it.live("allowPooler accepts the risk explicitly", () =>
    Effect.gen(function* () {
      const { url } = yield* bouncer("session")
      const keyBase = uniqueKeyBase("pooler-ok")
      const service = yield* Layer.build(loneDyno({ url, allowPooler: true }))
      const result = yield* LoneDyno.exclusive(() => Effect.succeed("ran"), { keyBase, background: false }).pipe(
        Effect.provide(service)
      )
      expect(result).toEqual(Option.some("ran"))
    }).pipe(Effect.scoped)
  )

  it.live("a direct connection is not mistaken for a pooler", () =>
    Effect.gen(function* () {
      const result = yield* LoneDyno.exclusive(() => Effect.succeed(1), {
        keyBase: uniqueKeyBase("direct"),
        background: false
      })
      expect(result).toEqual(Option.some(1))
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )
})

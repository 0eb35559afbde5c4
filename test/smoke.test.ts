import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect, Option } from "effect"
import { LoneDyno } from "../src/index.js"
import { loneDyno, uniqueKeyBase } from "./support/layer.js"

describe("smoke", () => {
  it.live("foreground runs and returns, background acquires", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("smoke")
      const a = yield* LoneDyno.exclusive(() => Effect.succeed(41), { keyBase, background: false })
      expect(a).toEqual(Option.some(41))
      const started = yield* Deferred.make<number>()
      const handle = yield* LoneDyno.exclusive((signal) => Deferred.succeed(started, signal.slot), { keyBase })
      expect(yield* Deferred.await(started)).toBe(0)
      expect(yield* handle.awaitSlot).toBe(0)
      const b = yield* LoneDyno.exclusive(() => Effect.succeed(1), { keyBase, background: false })
      expect(b).toEqual(Option.none())
      const holders = yield* LoneDyno.holders({ keyBase })
      expect(holders[0]?.held).toBe(true)
      const n = yield* LoneDyno.signal("hi", { keyBase })
      expect(n).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )
})

import { describe, expect, it } from "@effect/vitest"
import { Config, ConfigProvider, Deferred, Effect, Exit, Fiber, Layer, Option, Ref, Scope, Stream } from "effect"
import pg from "pg"
import { LoneDyno, type LoneDynoError, Keys as LoneDynoKeys } from "../src/index.js"
import { databaseUrl, loneDyno, postgres, uniqueKeyBase } from "./support/layer.js"

const heldBy = (keyBase: string, dynos = 1) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: databaseUrl() })
    await client.connect()
    try {
      const result = await client.query(
        "SELECT count(*)::int AS n FROM pg_locks WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' " +
          "AND classid = (-2147483648)::int4::oid AND objid = ANY($1::int4[]::oid[])",
        [Array.from({ length: dynos }, (_, slot) => LoneDynoKeys.slotKey(keyBase, slot)[1])]
      )
      return result.rows[0].n as number
    } finally {
      await client.end()
    }
  })

/** A body that runs until interrupted, then records whether its slot was still held at that moment. */
const recordHeldOnInterrupt = (keyBase: string, seen: Ref.Ref<Array<string>>) => () =>
  Effect.never.pipe(
    Effect.onInterrupt(() =>
      Effect.flatMap(heldBy(keyBase), (n) => Ref.update(seen, (s) => [...s, `interrupted while held=${n}`]))
    )
  )

const waitForState = (handle: LoneDyno.ExclusiveHandle, tag: LoneDyno.ExclusiveState["_tag"]) =>
  handle.changes.pipe(
    Stream.filter((state) => state._tag === tag),
    Stream.runHead,
    Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error(`state ${tag} never came`) })
  )

describe("exclusive in one process", () => {
  it.live("two calls with the same key base never hold the same slot", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("twice")
      const first = yield* LoneDyno.exclusive(() => Effect.never, { keyBase, dynos: 2 })
      const second = yield* LoneDyno.exclusive(() => Effect.never, { keyBase, dynos: 2 })
      const third = yield* LoneDyno.exclusive(() => Effect.never, { keyBase, dynos: 2 })
      const slots = [yield* first.awaitSlot, yield* second.awaitSlot].sort()
      expect(slots).toEqual([0, 1])
      yield* Effect.sleep("500 millis")
      expect((yield* third.state)._tag).toBe("Standby")
      expect(yield* heldBy(keyBase, 2)).toBe(2)
      // Releasing one slot hands it to the local standby.
      yield* first.stop
      yield* third.awaitSlot
      expect(yield* heldBy(keyBase, 2)).toBe(2)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("closing the scope interrupts the body first, then unlocks", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("scope")
      const seen = yield* Ref.make<Array<string>>([])
      const scope = yield* Scope.make()
      const handle = yield* LoneDyno.exclusive(recordHeldOnInterrupt(keyBase, seen), { keyBase }).pipe(
        Scope.extend(scope)
      )
      yield* handle.awaitSlot
      yield* Scope.close(scope, Exit.void)
      expect(yield* Ref.get(seen)).toEqual(["interrupted while held=1"])
      expect(yield* heldBy(keyBase)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a layer closed before the block's scope: the block stops before its slot is unlocked", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("early-layer")
      const seen = yield* Ref.make<Array<string>>([])
      const outer = yield* Scope.make()
      yield* Effect.gen(function* () {
        const handle = yield* LoneDyno.exclusive(recordHeldOnInterrupt(keyBase, seen), { keyBase }).pipe(
          Scope.extend(outer)
        )
        yield* handle.awaitSlot
      }).pipe(Effect.provide(loneDyno()))
      expect(yield* Ref.get(seen)).toEqual(["interrupted while held=1"])
      expect(yield* heldBy(keyBase)).toBe(0)
      yield* Scope.close(outer, Exit.void)
    })
  )

  it.live("a block that ends keeps its slot until the scope closes", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("ended")
      const handle = yield* LoneDyno.exclusive(() => Effect.void, { keyBase })
      yield* handle.awaitSlot
      yield* Effect.sleep("300 millis")
      expect(yield* heldBy(keyBase)).toBe(1)
      expect((yield* handle.state)._tag).toBe("Holding")
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a failing block releases its slot, is logged, and stands by again after a backoff", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("fails")
      const runs = yield* Ref.make(0)
      const handle = yield* LoneDyno.exclusive(
        () =>
          Effect.zipRight(
            Ref.update(runs, (n) => n + 1),
            Effect.fail("boom")
          ),
        { keyBase }
      )
      yield* waitForState(handle, "Backoff")
      expect(yield* heldBy(keyBase)).toBe(0)
      yield* waitForState(handle, "Holding")
      expect(yield* Ref.get(runs)).toBeGreaterThanOrEqual(2)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("foreground: returns none when the slot is held, waits with `wait`, releases after", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("fg")
      const gate = yield* Deferred.make<void>()
      const holder = yield* LoneDyno.exclusive(() => Deferred.await(gate).pipe(Effect.as("first")), {
        keyBase,
        background: false
      }).pipe(Effect.fork)
      yield* Effect.sleep("300 millis")
      expect(yield* LoneDyno.exclusive(() => Effect.succeed("no"), { keyBase, background: false })).toEqual(
        Option.none()
      )
      const waiter = yield* LoneDyno.exclusive(() => Effect.succeed("second"), {
        keyBase,
        background: false,
        wait: "20 seconds"
      }).pipe(Effect.fork)
      yield* Effect.sleep("200 millis")
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(holder)).toEqual(Option.some("first"))
      expect(yield* Fiber.join(waiter)).toEqual(Option.some("second"))
      expect(yield* heldBy(keyBase)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("foreground: interruption releases the slot", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("fg-int")
      const started = yield* Deferred.make<void>()
      const fiber = yield* LoneDyno.exclusive(
        () => Effect.zipRight(Deferred.succeed(started, undefined), Effect.never),
        {
          keyBase,
          background: false
        }
      ).pipe(Effect.fork)
      yield* Deferred.await(started)
      expect(yield* heldBy(keyBase)).toBe(1)
      yield* Fiber.interrupt(fiber)
      expect(yield* heldBy(keyBase)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )
})

describe("invalid options", () => {
  const reasonOf = <A, R>(effect: Effect.Effect<A, LoneDynoError.LoneDynoError | unknown, R>) =>
    effect.pipe(
      Effect.flip,
      Effect.map((error) => (error as { reason?: string; message?: string }).reason)
    )

  it.live("each bad option fails at the call with its reason, and a running block is not disturbed", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("valid")
      const handle = yield* LoneDyno.exclusive(() => Effect.never, { keyBase })
      yield* handle.awaitSlot
      const body = () => Effect.void
      const bad: Array<[unknown, string]> = [
        [{ dynos: 0 }, "InvalidDynos"],
        [{ dynos: -1 }, "InvalidDynos"],
        [{ dynos: 1.5 }, "InvalidDynos"],
        [{ dynos: 1e9 }, "InvalidDynos"],
        [{ dynos: "3" }, "InvalidDynos"],
        [{ keyBase: "" }, "InvalidKeyBase"],
        [{ keyBase: 42 }, "InvalidKeyBase"],
        [{ keyBase: "x".repeat(20_000) }, "InvalidKeyBase"],
        [{ processType: "" }, "InvalidProcessType"],
        [{ processType: 7 }, "InvalidProcessType"],
        [{ processType: true }, "InvalidProcessType"],
        [{ wait: "1 second" }, "InvalidOption"],
        [{ background: false, wait: "soon" }, "InvalidDuration"],
        [{ background: "no" }, "InvalidOption"]
      ]
      for (const [options, reason] of bad) {
        const got = yield* reasonOf(
          LoneDyno.exclusive(body, options as LoneDyno.ExclusiveOptions & { background?: true })
        )
        expect(got, JSON.stringify(options)).toBe(reason)
      }
      const notAFunction = 42 as unknown as () => Effect.Effect<void>
      expect(yield* reasonOf(LoneDyno.exclusive(notAFunction))).toBe("InvalidOption")
      expect((yield* handle.state)._tag).toBe("Holding")
      expect(yield* heldBy(keyBase)).toBe(1)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a bad layer option fails the layer with a message that says what to do", () =>
    Effect.gen(function* () {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ dynos: 0 }, "InvalidDynos"],
        [{ heartbeatInterval: "10 seconds", heartbeatTimeout: "5 seconds" }, "InvalidDuration"],
        [{ background: false }, "InvalidOption"]
      ]
      for (const [options, reason] of cases) {
        const error = yield* Effect.flip(
          Effect.provide(LoneDyno.LoneDyno, loneDyno(options as never) as Layer.Layer<LoneDyno.LoneDyno, unknown>)
        )
        expect((error as { reason: string }).reason).toBe(reason)
        expect((error as { message: string }).message.length).toBeGreaterThan(20)
      }
    })
  )
})

describe("layerConfig", () => {
  const withEnv = (env: Record<string, string>, config?: Parameters<typeof LoneDyno.layerConfig>[0]) =>
    LoneDyno.layerConfig(config).pipe(
      Layer.provide(postgres()),
      Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
    )

  it.live("reads every option from the environment by default", () =>
    Effect.gen(function* () {
      const keyBase = "env-key-base"
      const service = yield* LoneDyno.LoneDyno
      expect(service.options.keyBase).toBe(keyBase)
      expect(service.options.dynos).toBe(3)
      expect(service.options.processType).toBe("worker")
      const handle = yield* LoneDyno.exclusive(() => Effect.never)
      expect(handle.keyBase).toBe(keyBase)
      expect(handle.dynos).toBe(3)
      yield* handle.awaitSlot
    }).pipe(
      Effect.scoped,
      Effect.provide(
        withEnv({
          LONE_DYNO_KEY_BASE: "env-key-base",
          LONE_DYNO_DYNOS: "3",
          LONE_DYNO_PROCESS_TYPE: "worker",
          DYNO: "worker.2"
        })
      ),
      Effect.catchAll((error) => Effect.die(error))
    )
  )

  it.live("takes a Config per option, as PgClient.layerConfig does", () =>
    Effect.gen(function* () {
      const service = yield* LoneDyno.LoneDyno
      expect(service.options.keyBase).toBe("from SCHEDULER_LOCK")
      expect(service.options.dynos).toBe(2)
    }).pipe(
      Effect.provide(
        withEnv(
          { SCHEDULER_LOCK: "from SCHEDULER_LOCK" },
          { keyBase: Config.string("SCHEDULER_LOCK"), dynos: Config.succeed(2) }
        )
      )
    )
  )

  it.live("a bad value in the environment fails the layer with a typed error", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(Effect.provide(LoneDyno.LoneDyno, withEnv({ LONE_DYNO_DYNOS: "0" })))
      expect((error as { reason?: string }).reason).toBe("InvalidDynos")
    })
  )
})

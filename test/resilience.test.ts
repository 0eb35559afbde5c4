import { describe, expect, it } from "@effect/vitest"
import { type Context, Deferred, Effect, Layer, Ref, Stream } from "effect"
import pg from "pg"
import { LoneDyno } from "../src/index.js"
import { type Dyno, has, killAll, spawnDyno, waitFor } from "./support/fleet.js"
import { databaseUrl, loneDyno, uniqueKeyBase } from "./support/layer.js"
import { startThrowawayPostgres } from "./support/postgres.js"
import { startProxy } from "./support/proxy.js"

const admin = <A>(url: string, f: (client: pg.Client) => Promise<A>) =>
  Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    await client.connect()
    try {
      return await f(client)
    } finally {
      await client.end()
    }
  })

/** Builds a layer into the current scope, like a separate process would hold its own. */
const process_ = (options: Parameters<typeof loneDyno>[0] = {}) =>
  Layer.build(loneDyno({ heartbeatInterval: "500 millis", heartbeatTimeout: "1 second", ...options }))

const inProcess =
  (context: Context.Context<LoneDyno.LoneDyno>) =>
  <A, E, R>(effect: Effect.Effect<A, E, R>) =>
    Effect.provide(effect, context)

const waitForState = (handle: LoneDyno.ExclusiveHandle, tag: LoneDyno.ExclusiveState["_tag"]) =>
  handle.changes.pipe(
    Stream.filter((state) => state._tag === tag),
    Stream.runHead,
    Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error(`state ${tag} never came`) })
  )

/** A holder on `a` that records when its body is interrupted, and a deferred for a standby's start time. */
const holderAndStandbyTimes = (a: ReturnType<typeof inProcess>, keyBase: string) =>
  Effect.gen(function* () {
    const interrupted = yield* Deferred.make<number>()
    const started = yield* Deferred.make<number>()
    const first = yield* a(
      LoneDyno.exclusive(() => Effect.never.pipe(Effect.onInterrupt(() => Deferred.succeed(interrupted, Date.now()))), {
        keyBase
      })
    )
    yield* first.awaitSlot
    return { first, interrupted, started }
  })

const standbyRecordingStart = (keyBase: string, started: Deferred.Deferred<number>) =>
  LoneDyno.exclusive(() => Deferred.succeed(started, Date.now()), { keyBase })

const holderPid = (keyBase: string) => Effect.map(LoneDyno.holders({ keyBase }), (slots) => slots[0]?.pid)

describe("lock loss and recovery", () => {
  it.live("pg_terminate_backend: the body is interrupted, a standby takes over, the old holder stands by", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("terminate")
      const a = inProcess(yield* process_())
      const b = inProcess(yield* process_())
      const { first, interrupted, started } = yield* holderAndStandbyTimes(a, keyBase)
      const second = yield* b(standbyRecordingStart(keyBase, started))
      yield* Effect.sleep("300 millis")
      expect((yield* second.state)._tag).toBe("Standby")
      const pid = yield* a(holderPid(keyBase))
      yield* admin(databaseUrl(), (c) => c.query("SELECT pg_terminate_backend($1)", [pid]))
      const stoppedAt = yield* Deferred.await(interrupted)
      const startedAt = yield* Deferred.await(started)
      // The server frees the slot first; the old holder hears of it one error event later (the documented window).
      expect(stoppedAt).toBeLessThanOrEqual(startedAt + 50)
      yield* waitForState(first, "Standby")
      yield* Effect.sleep("1500 millis")
      expect((yield* first.state)._tag).toBe("Standby")
      expect((yield* second.state)._tag).toBe("Holding")
    }).pipe(Effect.scoped)
  )

  it.live("signals keep arriving after a reconnect", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("resignal")
      const a = inProcess(yield* process_())
      const received = yield* Ref.make<Array<string>>([])
      const handle = yield* a(
        LoneDyno.exclusive(
          (signal) =>
            signal.watch().pipe(Stream.runForEach((payload) => Ref.update(received, (all) => [...all, payload]))),
          { keyBase }
        )
      )
      yield* handle.awaitSlot
      yield* Effect.sleep("100 millis")
      expect(yield* a(LoneDyno.signal("before", { keyBase }))).toBe(1)
      const pid = yield* a(holderPid(keyBase))
      yield* admin(databaseUrl(), (c) => c.query("SELECT pg_terminate_backend($1)", [pid]))
      yield* waitForState(handle, "Standby")
      yield* waitForState(handle, "Holding")
      yield* Effect.sleep("100 millis")
      expect(yield* a(LoneDyno.signal("after", { keyBase }))).toBe(1)
      yield* Effect.gen(function* () {
        while ((yield* Ref.get(received)).length < 2) yield* Effect.sleep("20 millis")
      }).pipe(Effect.timeout("10 seconds"))
      expect(yield* Ref.get(received)).toEqual(["before", "after"])
    }).pipe(Effect.scoped)
  )

  it.live("a stalled connection: the heartbeat times out and the body stops before a standby can start", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("stall")
      const direct = new URL(databaseUrl())
      const proxy = yield* Effect.acquireRelease(
        Effect.promise(() => startProxy({ host: direct.hostname, port: Number(direct.port) })),
        (p) => Effect.promise(() => p.close())
      )
      const a = inProcess(yield* process_({ url: proxy.url(databaseUrl()) }))
      const b = inProcess(yield* process_())
      const { interrupted, started } = yield* holderAndStandbyTimes(a, keyBase)
      yield* b(standbyRecordingStart(keyBase, started))
      yield* Effect.sleep("300 millis")
      const frozenAt = Date.now()
      proxy.freeze()
      const stoppedAt = yield* Deferred.await(interrupted).pipe(Effect.timeout("15 seconds"))
      // Interval 500 ms + timeout 1 s: the holder gives up within a couple of seconds of the cut.
      expect(stoppedAt - frozenAt).toBeLessThan(10_000)
      expect(yield* Deferred.isDone(started)).toBe(false)
      // The server only frees the slot once it sees the connection go (here: the cut reaches it).
      proxy.cut()
      const startedAt = yield* Deferred.await(started).pipe(Effect.timeout("15 seconds"))
      expect(startedAt).toBeGreaterThanOrEqual(stoppedAt)
    }).pipe(Effect.scoped)
  )
})

describe("processes", () => {
  const spawned: Array<Dyno> = []
  const cleanup = Effect.promise(() => killAll(spawned.splice(0)))

  it.live("SIGTERM: the body is interrupted, the slot released, and a standby takes over at once", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("sigterm")
      const env = { DATABASE_URL: databaseUrl(), KEY_BASE: keyBase }
      const holder = spawnDyno(env, "holder")
      spawned.push(holder)
      yield* Effect.promise(() => waitFor("the holder to run", () => holder.running()))
      const standby = spawnDyno(env, "standby")
      spawned.push(standby)
      yield* Effect.promise(() => waitFor("the standby to be ready", () => has(standby, "ready")))
      yield* Effect.sleep("300 millis")
      const sentAt = Date.now()
      holder.kill("SIGTERM")
      const code = yield* Effect.promise(() => holder.exited)
      expect(code).toBe(0)
      expect(has(holder, "stop")).toBe(true)
      yield* Effect.promise(() => waitFor("the standby to take over", () => standby.running(), 10_000))
      const startedAt = standby.events.find((e) => e.event === "start")!.t
      const stoppedAt = holder.events.find((e) => e.event === "stop")!.t
      expect(stoppedAt).toBeLessThanOrEqual(startedAt)
      expect(startedAt - sentAt).toBeLessThan(5_000)
    }).pipe(Effect.ensuring(cleanup))
  )

  it.live("a PostgreSQL restart: every process reconnects and exactly N hold again", () =>
    Effect.gen(function* () {
      const server = yield* Effect.acquireRelease(
        Effect.promise(() => startThrowawayPostgres()),
        (s) => Effect.promise(() => s.stop())
      )
      const keyBase = uniqueKeyBase("restart")
      const env = { DATABASE_URL: server.url, KEY_BASE: keyBase, DYNOS: "2" }
      const dynos = Array.from({ length: 4 }, (_, i) => spawnDyno(env, `d${i}`))
      spawned.push(...dynos)
      const holding = () => dynos.filter((d) => d.running()).length
      yield* Effect.promise(() => waitFor("two holders", () => holding() === 2))
      yield* Effect.promise(() => server.restart())
      yield* Effect.promise(() => waitFor("every holder to stop", () => holding() === 0, 15_000))
      yield* Effect.promise(() => waitFor("two holders again", () => holding() === 2, 30_000))
      yield* Effect.sleep("1500 millis")
      expect(holding()).toBe(2)
      const slots = yield* admin(server.url, (c) =>
        c.query(
          "SELECT count(*)::int AS n FROM pg_locks " +
            "WHERE locktype = 'advisory' AND granted AND mode = 'ExclusiveLock' " +
            "AND classid = (-2147483648)::int4::oid"
        )
      )
      expect(slots.rows[0].n).toBe(2)
    }).pipe(Effect.scoped, Effect.ensuring(cleanup))
  )
})

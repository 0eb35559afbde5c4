import { PgClient } from "@effect/sql-pg"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Layer, Option, Queue, Redacted, type Scope, Stream, TestClock } from "effect"
import pg from "pg"
import { Keys, LoneDyno, LoneDynoConfig, Signal } from "../src/index.js"
import * as Session from "../src/internal/session.js"
import { databaseUrl, loneDyno, uniqueKeyBase } from "./support/layer.js"

// ---------------------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------------------

/** Lets forked fibers run without moving the test clock. */
const flush = Effect.gen(function* () {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow()
})

/** Runs `watchQueue` over an in-memory queue, collecting what it hands over into `out`. */
const watching = (options?: Signal.WatchOptions) =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<string>()
    const out = yield* Queue.unbounded<string>()
    const fiber = yield* Signal.watchQueue(queue, options).pipe(
      Stream.runForEach((payload) => Queue.offer(out, payload)),
      Effect.fork
    )
    yield* flush
    const delivered = Queue.takeAll(out).pipe(Effect.map(Chunk.toArray))
    const offer = (...payloads: Array<string>) => Effect.zipRight(Queue.offerAll(queue, payloads), flush)
    const advance = (duration: Parameters<typeof TestClock.adjust>[0]) =>
      Effect.zipRight(TestClock.adjust(duration), flush)
    return { queue, fiber, delivered, offer, advance }
  })

/** A raw node-postgres client on the test database, closed with the scope. */
const rawClient = (url = databaseUrl()): Effect.Effect<pg.Client, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const client = new pg.Client({ connectionString: url })
      client.on("error", () => undefined)
      await client.connect()
      return client
    }),
    (client) => Effect.promise(() => client.end().catch(() => undefined))
  )

const query = <R extends pg.QueryResultRow>(client: pg.Client, text: string, values?: Array<unknown>) =>
  Effect.promise(() => client.query<R>(text, values)).pipe(Effect.map((result) => result.rows))

/** The documented operator formula for a slot's channel, computed by the server. */
const sqlChannel = "'tld_' || left(encode(sha256(convert_to($1::text, 'UTF8')), 'hex'), 40) || '_' || $2::int"

/** Holds a slot of `keyBase` in this process and collects every payload the holder's `watch` hands over. */
const holder = (keyBase: string, options: { dynos?: number; watch?: Signal.WatchOptions } = {}) =>
  Effect.gen(function* () {
    const received = yield* Queue.unbounded<string>()
    const handle = yield* LoneDyno.exclusive(
      (signal) => signal.watch(options.watch).pipe(Stream.runForEach((payload) => Queue.offer(received, payload))),
      { keyBase, dynos: options.dynos }
    )
    const slot = yield* handle.awaitSlot.pipe(Effect.timeout("20 seconds"))
    return { received, slot, handle }
  })

/** Takes exactly `n` payloads, waiting generously for them. */
const take = (received: Queue.Queue<string>, n: number) =>
  Queue.takeN(received, n).pipe(Effect.map(Chunk.toArray), Effect.timeout("15 seconds"))

/**
 * Proves a holder got nothing else: delivery is in order, so if anything else had been sent to it, it would
 * arrive before this marker.
 */
const expectNothingMore = (received: Queue.Queue<string>, keyBase: string, options: LoneDyno.SignalOptions = {}) =>
  Effect.gen(function* () {
    const marker = `marker ${Math.random()}`
    yield* LoneDyno.signal(marker, { keyBase, ...options })
    expect(yield* take(received, 1)).toEqual([marker])
    expect(yield* Queue.size(received)).toBe(0)
  })

/** A database of its own, so a well-known key base cannot clash with a concurrent test. */
const freshDatabase = Effect.gen(function* () {
  const name = `signals_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e6)}`
  const admin = yield* rawClient()
  yield* query(admin, `CREATE DATABASE ${name}`)
  yield* Effect.addFinalizer(() => query(admin, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).pipe(Effect.ignore))
  const url = new URL(databaseUrl())
  url.pathname = `/${name}`
  return url.toString()
})

const loneDynoOn = (url: string) =>
  LoneDyno.layer({ standbyInterval: "200 millis" }).pipe(
    Layer.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 2 }))
  )

// ---------------------------------------------------------------------------------------------------------------
// watch({ sleep, ttl }) pacing, under the test clock
// ---------------------------------------------------------------------------------------------------------------

describe("watch pacing", () => {
  it.effect(
    "delivers nothing before sleep, then every payload queued before the wake, in order",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ sleep: "10 seconds", ttl: "100 millis" })
        yield* w.offer("a", "b")
        yield* w.advance("5 seconds")
        yield* w.offer("c", "", "d")
        yield* w.advance("4999 millis")
        expect(yield* w.delivered).toEqual([])
        yield* w.advance("1 millis")
        expect(yield* w.delivered).toEqual(["a", "b", "c", "", "d"])
      }),
    20_000
  )

  it.effect(
    "with an empty queue, waits up to ttl and hands over a payload that arrives meanwhile",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ sleep: "10 seconds", ttl: "1 second" })
        yield* w.advance("10 seconds")
        expect(yield* w.delivered).toEqual([])
        yield* w.advance("400 millis")
        yield* w.offer("during ttl")
        expect(yield* w.delivered).toEqual(["during ttl"])
      }),
    20_000
  )

  it.effect(
    "a payload that misses the ttl wait is kept for the next wake, not dropped",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ sleep: "10 seconds", ttl: "100 millis" })
        yield* w.advance("10 seconds")
        yield* w.advance("100 millis")
        yield* w.offer("late", "later")
        yield* w.advance("5 seconds")
        expect(yield* w.delivered).toEqual([])
        yield* w.advance("5200 millis")
        expect(yield* w.delivered).toEqual(["late", "later"])
      }),
    20_000
  )

  it.effect(
    "nothing is dropped or reordered across many wakes",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ sleep: "1 second", ttl: "100 millis" })
        const sent: Array<string> = []
        const got: Array<string> = []
        for (let i = 0; i < 120; i++) {
          const payload = `p${i}`
          sent.push(payload)
          yield* w.offer(payload)
          // Offers land before, during and after the ttl wait of each wake.
          yield* w.advance(Duration.millis([30, 70, 110, 250, 500][i % 5]!))
          got.push(...(yield* w.delivered))
        }
        yield* w.advance("5 seconds")
        got.push(...(yield* w.delivered))
        expect(got).toEqual(sent)
      }),
    30_000
  )

  it.effect(
    "ttl 0 does not wait: an empty wake hands over nothing and the next wake gets what came",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ sleep: "1 second", ttl: 0 })
        yield* w.advance("1 second")
        yield* w.offer("x")
        expect(yield* w.delivered).toEqual([])
        yield* w.advance("1 second")
        expect(yield* w.delivered).toEqual(["x"])
      }),
    20_000
  )

  it.effect(
    "either option alone applies the other's default (sleep 60 seconds, ttl 100 millis)",
    () =>
      Effect.gen(function* () {
        const w = yield* watching({ ttl: "100 millis" })
        yield* w.offer("one")
        yield* w.advance("59999 millis")
        expect(yield* w.delivered).toEqual([])
        yield* w.advance("1 millis")
        expect(yield* w.delivered).toEqual(["one"])
        const v = yield* watching({ sleep: "1 second" })
        yield* v.advance("1 second")
        yield* v.advance("99 millis")
        yield* v.offer("within default ttl")
        expect(yield* v.delivered).toEqual(["within default ttl"])
      }),
    20_000
  )

  it.effect(
    "without options, payloads are pushed as they arrive, without the clock moving",
    () =>
      Effect.gen(function* () {
        const w = yield* watching()
        yield* w.offer("now")
        expect(yield* w.delivered).toEqual(["now"])
        yield* w.offer("1", "2", "3")
        expect(yield* w.delivered).toEqual(["1", "2", "3"])
      }),
    20_000
  )

  it.effect("payloads queued before watch is called are delivered", () =>
    Effect.gen(function* () {
      const queue = yield* Queue.unbounded<string>()
      yield* Queue.offerAll(queue, ["early 1", "early 2"])
      const got = yield* Signal.watchQueue(queue).pipe(Stream.take(2), Stream.runCollect)
      expect(Chunk.toArray(got)).toEqual(["early 1", "early 2"])
    })
  )

  it.effect("invalid durations fail with InvalidDuration", () =>
    Effect.gen(function* () {
      const queue = yield* Queue.unbounded<string>()
      const cases: Array<Signal.WatchOptions> = [
        { sleep: "often" as never },
        { ttl: -1 },
        { sleep: -5 },
        { sleep: "1 second", ttl: BigInt(-1) },
        { sleep: 0 },
        { sleep: 0, ttl: 0 },
        { sleep: "1 second", ttl: Number.POSITIVE_INFINITY }
      ]
      for (const options of cases) {
        const error = yield* Signal.watchQueue(queue, options).pipe(Stream.runDrain, Effect.flip)
        expect(error._tag).toBe("LoneDynoConfigError")
        expect(error.reason).toBe("InvalidDuration")
      }
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Payload validation, without a database
// ---------------------------------------------------------------------------------------------------------------

describe("validatePayload", () => {
  it.effect("accepts up to 7999 UTF-8 bytes, refuses 8000 with PayloadTooLarge", () =>
    Effect.gen(function* () {
      expect(Signal.maxPayloadBytes).toBe(7999)
      expect(yield* Signal.validatePayload("")).toBe("")
      expect(yield* Signal.validatePayload("a".repeat(7999))).toHaveLength(7999)
      const multiByte = `${"€".repeat(2666)}a` // 2666 * 3 + 1 = 7999 bytes
      expect(Buffer.byteLength(multiByte)).toBe(7999)
      expect(yield* Signal.validatePayload(multiByte)).toBe(multiByte)
      for (const tooLarge of ["a".repeat(8000), `${"€".repeat(2666)}ab`, "🦄".repeat(2000)]) {
        const error = yield* Effect.flip(Signal.validatePayload(tooLarge))
        expect(error.reason).toBe("PayloadTooLarge")
      }
    })
  )

  it.effect("refuses what could not arrive as sent, and non-strings, with InvalidPayload", () =>
    Effect.gen(function* () {
      for (const bad of ["a\u0000b", "\ud800", "x\udfff", 42, null, undefined, { toString: () => "x" }]) {
        const error = yield* Effect.flip(Signal.validatePayload(bad))
        expect(error.reason).toBe("InvalidPayload")
      }
      expect(yield* Signal.validatePayload("🦄 pair")).toBe("🦄 pair")
    })
  )
})

// ---------------------------------------------------------------------------------------------------------------
// Signals over real PostgreSQL, holders in this process
// ---------------------------------------------------------------------------------------------------------------

describe("signals in one process", () => {
  it.live("a holder gets each of several back-to-back signals once, in order; signal returns 1", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals order")
      const { received } = yield* holder(keyBase)
      const sent = Array.from({ length: 20 }, (_, i) => `payload ${i}`)
      for (const payload of sent) expect(yield* LoneDyno.signal(payload, { keyBase })).toBe(1)
      expect(yield* take(received, sent.length)).toEqual(sent)
      yield* expectNothingMore(received, keyBase)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("with no holder, signal sends and returns 0", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals nobody")
      expect(yield* LoneDyno.signal("anyone?", { keyBase })).toBe(0)
      expect(yield* LoneDyno.signal("anyone?", { keyBase, dynos: 5 })).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("payloads arrive byte for byte: empty, quotes, newlines, non-ASCII, SQL, 7999 bytes", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals payloads")
      const { received } = yield* holder(keyBase)
      const payloads = [
        "",
        "x'; CREATE TABLE injected(); --",
        "'); SELECT pg_sleep(30); --",
        "$1 $2 :name ? %s",
        `it's "quoted" \`back\` \\ backslash`,
        "line one\nline two\r\nline three\n",
        "\ttabbed\u000bvertical\u001bescape",
        "réticuler les splines ✨ 日本語 🦄👨‍👩‍👧",
        " ",
        "".padEnd(100, "'"),
        "a".repeat(7999),
        `${"€".repeat(2666)}a`,
        `${"🦄".repeat(1999)}abc`,
        "",
        "the same twice",
        "the same twice"
      ]
      for (const payload of payloads) expect(yield* LoneDyno.signal(payload, { keyBase })).toBe(1)
      const got = yield* take(received, payloads.length)
      expect(got).toEqual(payloads)
      for (const [i, payload] of got.entries()) {
        expect(Buffer.from(payload, "utf8").equals(Buffer.from(payloads[i]!, "utf8"))).toBe(true)
      }
      yield* expectNothingMore(received, keyBase)

      const client = yield* rawClient()
      const rows = yield* query<{ missing: boolean }>(client, "SELECT to_regclass('injected') IS NULL AS missing")
      expect(rows[0]?.missing).toBe(true)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a payload of 8000 bytes fails with PayloadTooLarge and nothing is sent", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals too large")
      const { received } = yield* holder(keyBase)
      for (const tooLarge of ["a".repeat(8000), `${"€".repeat(2666)}ab`, "b".repeat(100_000)]) {
        const error = yield* Effect.flip(LoneDyno.signal(tooLarge, { keyBase }))
        expect(error._tag).toBe("LoneDynoConfigError")
        expect(error.reason).toBe("PayloadTooLarge")
      }
      for (const invalid of ["nul \u0000 inside", "lone \ud83e surrogate"]) {
        const error = yield* Effect.flip(LoneDyno.signal(invalid, { keyBase }))
        expect(error.reason).toBe("InvalidPayload")
      }
      yield* expectNothingMore(received, keyBase)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a slot-targeted signal reaches only that slot's holder; an unheld slot returns 0", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals slot")
      const a = yield* holder(keyBase, { dynos: 3 })
      const b = yield* holder(keyBase, { dynos: 3 })
      expect(new Set([a.slot, b.slot])).toEqual(new Set([0, 1]))
      const [zero, one] = a.slot === 0 ? [a, b] : [b, a]

      expect(yield* LoneDyno.signal("to one", { keyBase, dynos: 3, slot: 1 })).toBe(1)
      expect(yield* LoneDyno.signal("to zero", { keyBase, dynos: 3, slot: 0 })).toBe(1)
      expect(yield* LoneDyno.signal("to two", { keyBase, dynos: 3, slot: 2 })).toBe(0)
      expect(yield* LoneDyno.signal("to all", { keyBase, dynos: 3 })).toBe(2)
      expect(yield* take(one.received, 2)).toEqual(["to one", "to all"])
      expect(yield* take(zero.received, 2)).toEqual(["to zero", "to all"])
      yield* expectNothingMore(one.received, keyBase, { dynos: 3, slot: 1 })
      yield* expectNothingMore(zero.received, keyBase, { dynos: 3, slot: 0 })

      for (const slot of [3, -1, 1.5, Number.NaN, "1" as never]) {
        const error = yield* Effect.flip(LoneDyno.signal("bad slot", { keyBase, dynos: 3, slot }))
        expect(error._tag).toBe("LoneDynoConfigError")
        expect(error.reason).toBe("InvalidSlot")
      }
      yield* expectNothingMore(one.received, keyBase, { dynos: 3, slot: 1 })
      yield* expectNothingMore(zero.received, keyBase, { dynos: 3, slot: 0 })
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("signals of one key base never reach the holder of another", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals mine")
      const other = uniqueKeyBase("signals theirs")
      const mine = yield* holder(keyBase)
      const theirs = yield* holder(other)
      expect(yield* LoneDyno.signal("for mine", { keyBase })).toBe(1)
      expect(yield* take(mine.received, 1)).toEqual(["for mine"])
      yield* expectNothingMore(theirs.received, other)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("weird key bases: the signal reaches the holder, and SQL computes the same channel", () =>
    Effect.gen(function* () {
      const suffix = uniqueKeyBase("")
      const keyBases = [
        `reticulate splines${suffix}`,
        `Reticulate SPLINES${suffix}`,
        `it's "quoted"; DROP TABLE x; --${suffix}`,
        `back\\slash\nnewline${suffix}`,
        `réticuler les splines ✨ 日本語 🦄${suffix}`,
        `${suffix} long`.padEnd(500, "é"),
        `${suffix} long`.padEnd(500, "x")
      ]
      expect(keyBases.at(-1)).toHaveLength(500)
      const client = yield* rawClient()
      for (const keyBase of keyBases) {
        const { received, slot } = yield* holder(keyBase, { dynos: 2 })
        expect(slot).toBe(0)
        const channel = Keys.slotChannel(keyBase, 0)
        expect(Buffer.byteLength(channel)).toBeLessThanOrEqual(63)
        const rows = yield* query<{ c: string }>(client, `SELECT ${sqlChannel} AS c`, [keyBase, 0])
        expect(rows[0]?.c).toBe(channel)
        expect(yield* LoneDyno.signal(`for ${keyBase}`, { keyBase, dynos: 2 })).toBe(1)
        expect(yield* take(received, 1)).toEqual([`for ${keyBase}`])
        yield* query(client, `SELECT pg_notify(${sqlChannel}, $3)`, [keyBase, 0, "from psql"])
        expect(yield* take(received, 1)).toEqual(["from psql"])
      }
      const channels = new Set(keyBases.map((keyBase) => Keys.slotChannel(keyBase, 0)))
      expect(channels.size).toBe(keyBases.length)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a holder watching with sleep and ttl gets back-to-back signals once each, in order", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals paced")
      const { received } = yield* holder(keyBase, { watch: { sleep: "200 millis", ttl: "50 millis" } })
      const sent = ["one", "two", "", "four", "five"]
      for (const payload of sent) yield* LoneDyno.signal(payload, { keyBase })
      expect(yield* take(received, sent.length)).toEqual(sent)
      yield* expectNothingMore(received, keyBase)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a released slot gets nothing more, and its next holder gets each signal once", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals release")
      const first = yield* holder(keyBase)
      yield* LoneDyno.signal("before", { keyBase })
      expect(yield* take(first.received, 1)).toEqual(["before"])
      yield* first.handle.stop
      expect(yield* LoneDyno.signal("nobody", { keyBase })).toBe(0)
      const second = yield* holder(keyBase)
      expect(second.slot).toBe(0)
      expect(yield* LoneDyno.signal("after", { keyBase })).toBe(1)
      expect(yield* take(second.received, 1)).toEqual(["after"])
      yield* expectNothingMore(second.received, keyBase)
      expect(yield* Queue.size(first.received)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("a foreground block gets the signals sent while it runs", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals foreground")
      const result = yield* LoneDyno.exclusive(
        (signal) =>
          Effect.gen(function* () {
            yield* LoneDyno.signal("one", { keyBase })
            yield* LoneDyno.signal("two", { keyBase })
            return yield* signal.watch().pipe(Stream.take(2), Stream.runCollect, Effect.timeout("15 seconds"))
          }),
        { keyBase, background: false }
      )
      expect(Option.map(result, Chunk.toArray)).toEqual(Option.some(["one", "two"]))
      expect(yield* LoneDyno.signal("after", { keyBase })).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The documented key base and operator rule, in a database of their own
// ---------------------------------------------------------------------------------------------------------------

describe("signals in a database of their own", () => {
  it.live('"reticulate splines": LoneDyno.signal and the documented psql statement both reach the holder', () =>
    Effect.gen(function* () {
      const url = yield* freshDatabase
      yield* Effect.gen(function* () {
        const keyBase = "reticulate splines"
        const { received, slot } = yield* holder(keyBase)
        expect(slot).toBe(0)
        expect(yield* LoneDyno.signal("hi ho silver!", { keyBase })).toBe(1)
        expect(yield* take(received, 1)).toEqual(["hi ho silver!"])

        // Exactly the statement the Keys module documents for operators.
        const client = yield* rawClient(url)
        yield* query(
          client,
          "SELECT pg_notify('tld_' || left(encode(sha256(convert_to('reticulate splines', 'UTF8')), 'hex'), 40) " +
            "|| '_0', 'hi ho silver!')"
        )
        expect(yield* take(received, 1)).toEqual(["hi ho silver!"])
        yield* query(client, `SELECT pg_notify(${sqlChannel}, $3)`, [keyBase, 0, 'it\'s "psql"\n✨'])
        expect(yield* take(received, 1)).toEqual(['it\'s "psql"\n✨'])
        yield* expectNothingMore(received, keyBase)
      }).pipe(Effect.scoped, Effect.provide(loneDynoOn(url)))
    }).pipe(Effect.scoped)
  )
})

// ---------------------------------------------------------------------------------------------------------------
// The lock session's LISTENs, seen from the session itself
// ---------------------------------------------------------------------------------------------------------------

describe("lock session LISTEN", () => {
  it.live("a held slot listens on its own channel, and the LISTEN is dropped when the slot is released", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("signals listen")
      const options = yield* LoneDynoConfig.resolve({ keyBase })
      const session = yield* Session.make(options, {
        config: { connectionString: databaseUrl() },
        applicationName: "signals test"
      })
      const listening = (connection: Session.Connection) =>
        Effect.promise(() => connection.client.query<{ c: string }>("SELECT pg_listening_channels() AS c")).pipe(
          Effect.map((result) => result.rows.map((row) => row.c).filter((c) => c.startsWith("tld_")))
        )
      const connection = yield* session.connection
      const first = yield* session.tryAcquire(keyBase, 2).pipe(Effect.map(Option.getOrThrow))
      const second = yield* session.tryAcquire(keyBase, 2).pipe(Effect.map(Option.getOrThrow))
      expect(first.channel).toBe(Keys.slotChannel(keyBase, first.slot))
      expect(new Set(yield* listening(connection))).toEqual(new Set([first.channel, second.channel]))

      yield* session.release(first)
      expect(yield* listening(connection)).toEqual([second.channel])
      expect(yield* Queue.isShutdown(first.payloads)).toBe(true)
      yield* session.release(second)
      expect(yield* listening(connection)).toEqual([])
    }).pipe(Effect.scoped)
  )
})

describe("signals sent at the same time", () => {
  const holderOf = (keyBase: string, dynos: number) =>
    Effect.gen(function* () {
      const received = yield* Queue.unbounded<string>()
      const handles = yield* Effect.forEach(Array.from({ length: dynos }), () =>
        LoneDyno.exclusive(
          (signal) =>
            signal.watch().pipe(Stream.runForEach((payload) => Queue.offer(received, `${signal.slot}:${payload}`))),
          { keyBase, dynos }
        )
      )
      yield* Effect.forEach(handles, (handle) => handle.awaitSlot)
      return received
    })

  const takeN = (queue: Queue.Queue<string>, n: number) =>
    Effect.gen(function* () {
      const all: Array<string> = []
      while (all.length < n) all.push(...(yield* Queue.takeBetween(queue, 1, n - all.length)))
      return all
    }).pipe(Effect.timeout("20 seconds"))

  it.live("identical payloads sent together are each delivered: none folded away", () =>
    Effect.gen(function* () {
      const keyBase = uniqueKeyBase("fold")
      const received = yield* holderOf(keyBase, 1)
      const counts = yield* Effect.forEach(Array.from({ length: 20 }), () => LoneDyno.signal("same", { keyBase }), {
        concurrency: "unbounded"
      })
      expect(counts).toEqual(Array.from({ length: 20 }, () => 1))
      expect(yield* takeN(received, 20)).toEqual(Array.from({ length: 20 }, () => "0:same"))
      yield* Effect.sleep("200 millis")
      expect(yield* Queue.size(received)).toBe(0)
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )

  it.live("many concurrent senders, several key bases and slots: each holder gets each payload once", () =>
    Effect.gen(function* () {
      const a = uniqueKeyBase("together a")
      const b = uniqueKeyBase("together b")
      const receivedA = yield* holderOf(a, 2)
      const receivedB = yield* holderOf(b, 1)
      const sends = Array.from({ length: 60 }, (_, i) =>
        i % 3 === 0
          ? LoneDyno.signal(`b${i}`, { keyBase: b })
          : i % 3 === 1
            ? LoneDyno.signal(`a${i}`, { keyBase: a, dynos: 2 })
            : LoneDyno.signal(`a${i}`, { keyBase: a, dynos: 2, slot: 1 })
      )
      const counts = yield* Effect.all(sends, { concurrency: "unbounded" })
      expect(counts).toEqual(Array.from({ length: 60 }, (_, i) => (i % 3 === 1 ? 2 : 1)))
      const gotA = yield* takeN(receivedA, 60)
      const gotB = yield* takeN(receivedB, 20)
      const expectedA = Array.from({ length: 60 }, (_, i) => i).flatMap((i) =>
        i % 3 === 1 ? [`0:a${i}`, `1:a${i}`] : i % 3 === 2 ? [`1:a${i}`] : []
      )
      expect([...gotA].sort()).toEqual([...expectedA].sort())
      expect([...gotB].sort()).toEqual(
        Array.from({ length: 60 }, (_, i) => i)
          .filter((i) => i % 3 === 0)
          .map((i) => `0:b${i}`)
          .sort()
      )
    }).pipe(Effect.scoped, Effect.provide(loneDyno()))
  )
})

/**
 * 2. Signal burst: 10,000 signals sent back to back to one holder, from `lanes` concurrent senders that each
 * send their share in sequence. Every payload must arrive, and each lane's payloads in the order it sent
 * them (the order between lanes is the servers' commit order). Throughput is payloads received per second,
 * from the first send to the last arrival, against a raw LISTENing node-postgres client fed the same way.
 */
import { Effect, Queue, Stream } from "effect"
import { Keys, LoneDyno } from "../src/index.js"
import { type Context, count, libraryLayer, now, type Outcome, ratio, rawClient, uniqueKeyBase } from "./support.js"

const lanes = 8

const payloadsOf = (n: number) =>
  Array.from({ length: lanes }, (_, lane) =>
    Array.from({ length: Math.ceil((n - lane) / lanes) }, (_, i) => `${lane}:${lane + i * lanes}`)
  )

/** Whether every payload arrived once, each lane in order. */
const check = (n: number, received: ReadonlyArray<string>) => {
  const last = new Map<number, number>()
  let inOrder = true
  const seen = new Set<string>()
  for (const payload of received) {
    seen.add(payload)
    const [lane, index] = payload.split(":").map(Number) as [number, number]
    if ((last.get(lane) ?? -1) >= index) inOrder = false
    last.set(lane, index)
  }
  return { delivered: seen.size, duplicates: received.length - seen.size, allDelivered: seen.size === n, inOrder }
}

const library = (ctx: Context, n: number) =>
  Effect.gen(function* () {
    const keyBase = uniqueKeyBase("burst")
    const received: Array<string> = []
    const done = yield* Queue.unbounded<number>()
    const handle = yield* LoneDyno.exclusive(
      (signal) =>
        signal.watch().pipe(
          Stream.runForEach((payload) =>
            Effect.suspend(() => {
              received.push(payload)
              return received.length === n ? Queue.offer(done, now()) : Effect.void
            })
          ),
          Effect.zipRight(Effect.never)
        ),
      { keyBase }
    )
    yield* handle.awaitSlot
    const t0 = now()
    yield* Effect.forEach(
      payloadsOf(n),
      (lane) => Effect.forEach(lane, (payload) => LoneDyno.signal(payload, { keyBase }), { discard: true }),
      { concurrency: lanes, discard: true }
    )
    const sent = now()
    const t1 = yield* Queue.take(done).pipe(Effect.timeout("60 seconds"))
    return { seconds: (t1 - t0) / 1000, sendSeconds: (sent - t0) / 1000, ...check(n, received) }
  }).pipe(Effect.scoped, Effect.provide(libraryLayer(ctx.url, {}, lanes)), Effect.runPromise)

const raw = async (ctx: Context, n: number) => {
  const keyBase = uniqueKeyBase("burst raw")
  const channel = Keys.slotChannel(keyBase, 0)
  const listener = await rawClient(ctx.url)
  const senders = await Promise.all(Array.from({ length: lanes }, () => rawClient(ctx.url)))
  const received: Array<string> = []
  let finish: (t: number) => void = () => undefined
  const done = new Promise<number>((resolve) => {
    finish = resolve
  })
  listener.on("notification", (message) => {
    received.push(message.payload ?? "")
    if (received.length === n) finish(now())
  })
  await listener.query(`LISTEN "${channel}"`)
  const t0 = now()
  await Promise.all(
    payloadsOf(n).map(async (lane, i) => {
      for (const payload of lane) await senders[i]!.query("SELECT pg_notify($1, $2)", [channel, payload])
    })
  )
  const sent = now()
  const t1 = await Promise.race([done, new Promise<number>((_, reject) => setTimeout(reject, 60_000))])
  await Promise.all([listener, ...senders].map((client) => client.end()))
  return { seconds: (t1 - t0) / 1000, sendSeconds: (sent - t0) / 1000, ...check(n, received) }
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const n = count(ctx, 10_000, 100)
  const rawResult = await raw(ctx, n)
  const libraryResult = await library(ctx, n)
  const libraryRate = n / libraryResult.seconds
  const rawRate = n / rawResult.seconds
  const r = ratio(libraryRate, rawRate)
  return {
    rows: [
      {
        benchmark: "burst",
        metric: `${n} signals, ${lanes} concurrent senders: throughput`,
        unit: "/s",
        library: libraryRate,
        raw: rawRate,
        ratio: r,
        target: ">= 0.5x raw",
        pass: r !== undefined && r >= 0.5
      },
      {
        benchmark: "burst",
        metric: "all delivered once, each sender's in order",
        unit: "",
        library: libraryResult.allDelivered && libraryResult.inOrder && libraryResult.duplicates === 0 ? "yes" : "no",
        raw: rawResult.allDelivered && rawResult.inOrder && rawResult.duplicates === 0 ? "yes" : "no",
        target: "yes",
        pass: libraryResult.allDelivered && libraryResult.inOrder && libraryResult.duplicates === 0
      }
    ],
    details: { signals: n, lanes, library: libraryResult, raw: rawResult }
  }
}

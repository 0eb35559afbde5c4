/**
 * 1. Signal latency: `LoneDyno.signal` -> the holder's `watch` stream, one signal at a time, against a raw
 * `SELECT pg_notify` -> a LISTENing node-postgres client. Sender and holder share this process.
 */
import { Effect, Queue, Stream } from "effect"
import { Keys, LoneDyno } from "../src/index.js"
import {
  type Context,
  count,
  libraryLayer,
  now,
  type Outcome,
  ratio,
  rawClient,
  summary,
  uniqueKeyBase
} from "./support.js"

const warmup = 200

const library = (ctx: Context, n: number) =>
  Effect.gen(function* () {
    const keyBase = uniqueKeyBase("latency")
    const received = yield* Queue.unbounded<number>()
    const handle = yield* LoneDyno.exclusive(
      (signal) =>
        signal.watch().pipe(
          Stream.runForEach(() => Queue.offer(received, now())),
          Effect.zipRight(Effect.never)
        ),
      { keyBase }
    )
    yield* handle.awaitSlot
    const samples: Array<number> = []
    const calls: Array<number> = []
    for (let i = 0; i < warmup + n; i++) {
      const t0 = now()
      yield* LoneDyno.signal(String(i), { keyBase })
      const returned = now()
      const t1 = yield* Queue.take(received)
      if (i >= warmup) {
        samples.push(t1 - t0)
        calls.push(returned - t0)
      }
    }
    return { samples, calls }
  }).pipe(Effect.scoped, Effect.provide(libraryLayer(ctx.url)), Effect.runPromise)

const raw = async (ctx: Context, n: number) => {
  const keyBase = uniqueKeyBase("latency raw")
  const channel = Keys.slotChannel(keyBase, 0)
  const listener = await rawClient(ctx.url)
  const sender = await rawClient(ctx.url)
  let resolve: (t: number) => void = () => undefined
  listener.on("notification", () => resolve(now()))
  await listener.query(`LISTEN "${channel}"`)
  const samples: Array<number> = []
  for (let i = 0; i < warmup + n; i++) {
    const arrived = new Promise<number>((r) => {
      resolve = r
    })
    const t0 = now()
    await sender.query("SELECT pg_notify($1, $2)", [channel, String(i)])
    const t1 = await arrived
    if (i >= warmup) samples.push(t1 - t0)
  }
  await Promise.all([listener.end(), sender.end()])
  return samples
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const n = count(ctx, 3000, 100)
  const rawSamples = summary(await raw(ctx, n))
  const measured = await library(ctx, n)
  const librarySamples = summary(measured.samples)
  const p99 = ratio(librarySamples.p99, rawSamples.p99)
  return {
    rows: [
      {
        benchmark: "latency",
        metric: `signal -> watch, p50 (${n} sequential)`,
        unit: "ms",
        library: librarySamples.p50,
        raw: rawSamples.p50,
        ratio: ratio(librarySamples.p50, rawSamples.p50)
      },
      {
        benchmark: "latency",
        metric: `signal -> watch, p99 (${n} sequential)`,
        unit: "ms",
        library: librarySamples.p99,
        raw: rawSamples.p99,
        ratio: p99,
        target: "<= 2x raw",
        pass: p99 !== undefined && p99 <= 2
      }
    ],
    details: {
      signals: n,
      warmup,
      library: librarySamples,
      raw: rawSamples,
      // How long `LoneDyno.signal` took to return (one pooled statement that also counts the holders).
      librarySignalCall: summary(measured.calls)
    }
  }
}

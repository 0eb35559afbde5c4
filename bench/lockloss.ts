/**
 * 4. Lock loss: `pg_terminate_backend` on the holder's lock session (found by its `application_name`) ->
 * the body is interrupted, against a raw node-postgres client's `error` event. Holder and terminator share
 * this process; the time runs from just before the terminating statement is sent. After each trial the
 * library reconnects and takes the slot again by itself.
 */
import { Effect, Fiber, LogLevel, Queue, Stream } from "effect"
import { LoneDyno } from "../src/index.js"
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

const terminate = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"

const library = (ctx: Context, trials: number) => {
  const applicationName = `bench lockloss ${process.pid}-${Date.now()}`
  return Effect.gen(function* () {
    const keyBase = uniqueKeyBase("lockloss")
    const interrupted = yield* Queue.unbounded<number>()
    const handle = yield* LoneDyno.exclusive(
      () => Effect.never.pipe(Effect.onInterrupt(() => Queue.offer(interrupted, now()))),
      { keyBase }
    )
    const admin = yield* Effect.promise(() => rawClient(ctx.url, "bench admin"))
    const samples: Array<number> = []
    for (let i = 0; i < trials; i++) {
      yield* handle.awaitSlot
      const holding = yield* handle.changes.pipe(
        Stream.filter((state) => state._tag !== "Holding"),
        Stream.runHead,
        Effect.fork
      )
      const t0 = now()
      yield* Effect.promise(() => admin.query(terminate, [applicationName]))
      const t1 = yield* Queue.take(interrupted).pipe(Effect.timeout("10 seconds"))
      samples.push(t1 - t0)
      yield* Fiber.join(holding)
    }
    yield* Effect.promise(() => admin.end())
    return samples
  }).pipe(
    Effect.scoped, // Every trial logs the lost session as an error, by design; keep the output readable.
    Effect.provide(libraryLayer(ctx.url, { applicationName }, 4, LogLevel.None)),
    Effect.runPromise
  )
}

const raw = async (ctx: Context, trials: number) => {
  const admin = await rawClient(ctx.url, "bench admin")
  const samples: Array<number> = []
  for (let i = 0; i < trials; i++) {
    const applicationName = `bench lockloss raw ${process.pid}-${i}`
    const holder = await rawClient(ctx.url, applicationName)
    await holder.query("SELECT pg_advisory_lock(1, $1::int4)", [i])
    const errored = new Promise<number>((resolve) => holder.once("error", () => resolve(now())))
    const t0 = now()
    await admin.query(terminate, [applicationName])
    samples.push((await errored) - t0)
  }
  await admin.end()
  return samples
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const trials = count(ctx, 30, 3)
  const rawSamples = summary(await raw(ctx, trials))
  const librarySamples = summary(await library(ctx, trials))
  return {
    rows: [
      {
        benchmark: "lockloss",
        metric: `backend terminated -> body interrupted, p50 (${trials} trials)`,
        unit: "ms",
        library: librarySamples.p50,
        raw: rawSamples.p50,
        ratio: ratio(librarySamples.p50, rawSamples.p50),
        target: "< 20 ms",
        pass: librarySamples.p50 < 20
      },
      {
        benchmark: "lockloss",
        metric: `backend terminated -> body interrupted, p99 (${trials} trials)`,
        unit: "ms",
        library: librarySamples.p99,
        raw: rawSamples.p99,
        ratio: ratio(librarySamples.p99, rawSamples.p99)
      }
    ],
    details: { trials, library: librarySamples, raw: rawSamples }
  }
}

/**
 * 5. Acquisition on an idle database, each trial with a fresh layer (so it includes connecting):
 * - from calling `exclusive` to the body running, against a raw connect plus one `pg_try_advisory_lock`
 *   (the layer is built first: the app's `PgClient` pool is not counted, the lock session's connect is);
 * - a non-holder learning that the slot is taken: a foreground `exclusive` (`background: false`) returning
 *   `Option.none()` while another session holds the slot, cold (fresh layer) and warm (session open), against
 *   a raw connect plus one failed try, and one failed try on a connected client.
 *
 * The acquiring block is a background one (the default); the standby check is a foreground one.
 */
import { Deferred, Effect, Option } from "effect"
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

const warmup = 3

const libraryAcquire = async (ctx: Context, trials: number) => {
  const samples: Array<number> = []
  for (let i = 0; i < warmup + trials; i++) {
    const keyBase = uniqueKeyBase("acquire")
    const elapsed = await Effect.gen(function* () {
      const started = yield* Deferred.make<number>()
      const t0 = now()
      yield* LoneDyno.exclusive(() => Deferred.succeed(started, now()), { keyBase })
      return (yield* Deferred.await(started)) - t0
    }).pipe(Effect.scoped, Effect.provide(libraryLayer(ctx.url)), Effect.runPromise)
    if (i >= warmup) samples.push(elapsed)
  }
  return samples
}

const rawAcquire = async (ctx: Context, trials: number) => {
  const samples: Array<number> = []
  for (let i = 0; i < warmup + trials; i++) {
    const [a, b] = Keys.slotKey(uniqueKeyBase("acquire raw"), 0)
    const t0 = now()
    const client = await rawClient(ctx.url)
    const result = await client.query("SELECT pg_try_advisory_lock($1::int4, $2::int4) AS ok", [a, b])
    if (result.rows[0].ok !== true) throw new Error("raw acquisition failed on an idle database")
    const t1 = now()
    await client.end()
    if (i >= warmup) samples.push(t1 - t0)
  }
  return samples
}

/** Cold: a fresh layer per trial. Warm: the figures of the trial's second call, on the open session. */
const libraryStandby = async (ctx: Context, trials: number, keyBase: string) => {
  const cold: Array<number> = []
  const warm: Array<number> = []
  for (let i = 0; i < warmup + trials; i++) {
    await Effect.gen(function* () {
      const call = LoneDyno.exclusive(() => Effect.void, { keyBase, background: false })
      const t0 = now()
      const first = yield* call
      const t1 = now()
      const second = yield* call
      const t2 = now()
      if (Option.isSome(first) || Option.isSome(second)) throw new Error("ran although the slot was held")
      if (i >= warmup) {
        cold.push(t1 - t0)
        warm.push(t2 - t1)
      }
    }).pipe(Effect.provide(libraryLayer(ctx.url)), Effect.runPromise)
  }
  return { cold, warm }
}

const rawStandby = async (ctx: Context, trials: number, key: Keys.LockKey) => {
  const cold: Array<number> = []
  const warm: Array<number> = []
  for (let i = 0; i < warmup + trials; i++) {
    const t0 = now()
    const client = await rawClient(ctx.url)
    const first = await client.query("SELECT pg_try_advisory_lock($1::int4, $2::int4) AS ok", [...key])
    const t1 = now()
    const second = await client.query("SELECT pg_try_advisory_lock($1::int4, $2::int4) AS ok", [...key])
    const t2 = now()
    await client.end()
    if (first.rows[0].ok !== false || second.rows[0].ok !== false) throw new Error("raw took a held lock")
    if (i >= warmup) {
      cold.push(t1 - t0)
      warm.push(t2 - t1)
    }
  }
  return { cold, warm }
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const trials = count(ctx, 20, 3)
  const rawAcquired = summary(await rawAcquire(ctx, trials))
  const libraryAcquired = summary(await libraryAcquire(ctx, trials))
  const keyBase = uniqueKeyBase("standby")
  const key = Keys.slotKey(keyBase, 0)
  const holder = await rawClient(ctx.url, "bench holder")
  await holder.query("SELECT pg_advisory_lock($1::int4, $2::int4)", [...key])
  const rawStandbys = await rawStandby(ctx, trials, key)
  const libraryStandbys = await libraryStandby(ctx, trials, keyBase)
  await holder.end()
  const rawCold = summary(rawStandbys.cold)
  const rawWarm = summary(rawStandbys.warm)
  const libraryCold = summary(libraryStandbys.cold)
  const libraryWarm = summary(libraryStandbys.warm)
  const acquired = ratio(libraryAcquired.p50, rawAcquired.p50)
  return {
    rows: [
      {
        benchmark: "acquisition",
        metric: `exclusive() -> body runs, fresh layer, p50 (${trials} trials)`,
        unit: "ms",
        library: libraryAcquired.p50,
        raw: rawAcquired.p50,
        ratio: acquired,
        target: "<= 2x raw",
        pass: acquired !== undefined && acquired <= 2
      },
      {
        benchmark: "acquisition",
        metric: "slot held elsewhere -> Option.none, fresh layer, p50",
        unit: "ms",
        library: libraryCold.p50,
        raw: rawCold.p50,
        ratio: ratio(libraryCold.p50, rawCold.p50)
      },
      {
        benchmark: "acquisition",
        metric: "slot held elsewhere -> Option.none, session open, p50",
        unit: "ms",
        library: libraryWarm.p50,
        raw: rawWarm.p50,
        ratio: ratio(libraryWarm.p50, rawWarm.p50)
      }
    ],
    details: {
      trials,
      acquire: { library: libraryAcquired, raw: rawAcquired },
      standbyCold: { library: libraryCold, raw: rawCold },
      standbyWarm: { library: libraryWarm, raw: rawWarm }
    }
  }
}

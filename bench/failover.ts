/**
 * 3. Failover: `kill -9` of the holder process (dynos 1) -> the standby process's body starts, with the
 * library's default settings, against a raw waiter blocked in `pg_advisory_lock`. Both are separate child
 * processes; the time runs from just before the kill (parent clock) to the standby's `start` event (its
 * clock; same machine, same wall clock). Each trial waits a random 0.3-1.3 s after the standby is ready, so
 * the kill lands anywhere in the standby's poll period.
 */
import { Keys } from "../src/index.js"
import {
  type Child,
  type Context,
  count,
  killAndWait,
  now,
  type Outcome,
  ratio,
  sleep,
  spawnChild,
  summary,
  uniqueKeyBase
} from "./support.js"

/** Runs `trials` handovers: each trial's standby becomes the next trial's holder. */
export const handovers = async (trials: number, spawn: () => Child) => {
  const children: Array<Child> = []
  const start = () => {
    const child = spawn()
    children.push(child)
    return child
  }
  const samples: Array<number> = []
  try {
    let holder = start()
    await holder.next("start")
    for (let i = 0; i < trials; i++) {
      const standby = start()
      await standby.next("ready")
      await sleep(300 + Math.random() * 1000)
      if (standby.events.some((e) => e.event === "start")) throw new Error("the standby started before the kill")
      const t0 = now()
      holder.kill("SIGKILL")
      const started = await standby.next("start", 20_000)
      samples.push(started.t - t0)
      await holder.exited
      holder = standby
    }
  } finally {
    await killAndWait(children)
  }
  return samples
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const trials = count(ctx, 15, 3)
  const keyBase = uniqueKeyBase("failover")
  const key = Keys.slotKey(uniqueKeyBase("failover raw"), 0)
  const raw = summary(await handovers(trials, () => spawnChild(ctx, "rawlock", { KEY: key.join(",") })))
  const library = summary(await handovers(trials, () => spawnChild(ctx, "dyno", { KEY_BASE: keyBase })))
  return {
    rows: [
      {
        benchmark: "failover",
        metric: `kill -9 holder -> standby starts, p50 (${trials} trials)`,
        unit: "ms",
        library: library.p50,
        raw: raw.p50,
        ratio: ratio(library.p50, raw.p50),
        target: "< 100 ms",
        pass: library.p50 < 100
      },
      {
        benchmark: "failover",
        metric: `kill -9 holder -> standby starts, p99 (${trials} trials)`,
        unit: "ms",
        library: library.p99,
        raw: raw.p99,
        ratio: ratio(library.p99, raw.p99),
        target: "< 250 ms",
        pass: library.p99 < 250
      }
    ],
    details: { trials, library, raw }
  }
}

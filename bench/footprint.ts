/**
 * 7. Footprint of one process running 3 background `exclusive` blocks that each watch their signals:
 * - PostgreSQL connections it holds, from `pg_stat_activity` by `application_name` (the lock session and its
 *   watcher are named after the process's pid, the app's pool after the benchmark), sampled every 100 ms for
 *   2 s while it holds the 3 slots, then again while another session holds them and it stands by;
 * - the memory the library adds: RSS and heap after a full GC, before and after starting the blocks, against
 *   a raw node-postgres client that takes the 3 locks and LISTENs on the 3 channels in the same kind of child.
 */
import { Keys } from "../src/index.js"
import {
  type Child,
  type Context,
  killAndWait,
  type Outcome,
  rawClient,
  sleep,
  spawnChild,
  uniqueKeyBase
} from "./support.js"

interface Memory {
  readonly rss: number
  readonly heapUsed: number
}

const mib = (bytes: number) => bytes / 2 ** 20

const delta = async (child: Child) => {
  const before = (await child.next("before")).memory as Memory
  const after = (await child.next("after", 60_000)).memory as Memory
  return { rss: mib(after.rss - before.rss), heap: mib(after.heapUsed - before.heapUsed), before, after }
}

export const run = async (ctx: Context): Promise<Outcome> => {
  const admin = await rawClient(ctx.url, "bench admin")
  const children: Array<Child> = []
  const spawn = (env: Record<string, string>) => {
    const child = spawnChild(ctx, "footprint", env, ["--expose-gc"])
    children.push(child)
    return child
  }
  const count = async (pid: number, appName: string) => {
    const result = await admin.query(
      "SELECT count(*) FILTER (WHERE application_name LIKE 'the-lone-dyno %' || $1 || '%')::int AS library, " +
        "count(*) FILTER (WHERE application_name = $2)::int AS pool FROM pg_stat_activity",
      [`:${pid}`, appName]
    )
    return result.rows[0] as { library: number; pool: number }
  }
  const sample = async (pid: number, appName: string) => {
    let library = 0
    let pool = 0
    for (let i = 0; i < 20; i++) {
      const counted = await count(pid, appName)
      library = Math.max(library, counted.library)
      pool = Math.max(pool, counted.pool)
      await sleep(100)
    }
    return { library, pool }
  }
  try {
    const keyBase = uniqueKeyBase("footprint")
    const appName = `bench footprint app ${process.pid}`
    const holder = spawn({ KEY_BASE: keyBase, APP_NAME: appName, MODE: "library" })
    const memory = await delta(holder)
    const holderPid = holder.process.pid ?? 0
    const holding = await sample(holderPid, appName)
    const rawChild = spawn({ KEY_BASE: uniqueKeyBase("footprint raw"), APP_NAME: appName, MODE: "raw" })
    const rawMemory = await delta(rawChild)
    await rawChild.next("holding")
    const rawHolding = Number(
      (
        await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [
          `bench raw footprint ${rawChild.process.pid}`
        ])
      ).rows[0].n
    )
    // Standing by: another session holds the 3 slots of a second key base.
    const busy = uniqueKeyBase("footprint standby")
    const blocker = await rawClient(ctx.url, "bench blocker")
    for (let i = 0; i < 3; i++) {
      await blocker.query("SELECT pg_advisory_lock($1::int4, $2::int4)", [...Keys.slotKey(`${busy} ${i}`, 0)])
    }
    const standby = spawn({ KEY_BASE: busy, APP_NAME: `${appName} standby`, MODE: "library" })
    await standby.next("started")
    await sleep(1000)
    const standing = await sample(standby.process.pid ?? 0, `${appName} standby`)
    await blocker.end()
    return {
      rows: [
        {
          benchmark: "footprint",
          metric: "connections of the library, 3 blocks holding + 3 watches",
          unit: "",
          library: holding.library,
          raw: rawHolding,
          target: "1",
          pass: holding.library <= 1
        },
        {
          benchmark: "footprint",
          metric: "connections of the library, 3 blocks standing by",
          unit: "",
          library: standing.library,
          target: "<= 2",
          pass: standing.library <= 2
        },
        {
          benchmark: "footprint",
          metric: "RSS added by the layer + 3 blocks + 3 watches (after GC)",
          unit: "MiB",
          library: memory.rss,
          raw: rawMemory.rss
        },
        {
          benchmark: "footprint",
          metric: "heap added by the layer + 3 blocks + 3 watches (after GC)",
          unit: "MiB",
          library: memory.heap,
          raw: rawMemory.heap
        }
      ],
      details: {
        connectionsHolding: holding,
        connectionsStandingBy: standing,
        rawConnectionsHolding: rawHolding,
        memory,
        rawMemory
      }
    }
  } finally {
    await killAndWait(children)
    await admin.end()
  }
}

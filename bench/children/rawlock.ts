/**
 * The raw baseline of a dyno: one node-postgres client that blocks in `pg_advisory_lock` until it holds the
 * key, then holds it until the process dies. Prints `ready` once connected and `start` once it holds.
 *
 *   DATABASE_URL, KEY (two int4 separated by a comma)
 */
import pg from "pg"
import { emit } from "./emit.js"

const [a, b] = (process.env.KEY ?? "1,1").split(",").map(Number)
const client = new pg.Client({ connectionString: process.env.DATABASE_URL, application_name: "bench rawlock" })
client.on("error", (error) => {
  emit({ event: "error", message: String(error) })
  process.exit(1)
})
await client.connect()
emit({ event: "ready" })
await client.query("SELECT pg_advisory_lock($1::int4, $2::int4)", [a, b])
emit({ event: "start" })
setInterval(() => undefined, 1 << 30)

import { expect, inject, it } from "@effect/vitest"
import pg from "pg"

it("takes and releases a session advisory lock on the test PostgreSQL", async () => {
  const url = inject("databaseUrl")
  const a = new pg.Client({ connectionString: url })
  const b = new pg.Client({ connectionString: url })
  await a.connect()
  await b.connect()
  try {
    const key = [-2147483648, 424242] as const
    const take = (c: pg.Client) => c.query("SELECT pg_try_advisory_lock($1, $2) AS ok", [...key])
    expect((await take(a)).rows[0].ok).toBe(true)
    expect((await take(b)).rows[0].ok).toBe(false)
    await a.query("SELECT pg_advisory_unlock($1, $2)", [...key])
    expect((await take(b)).rows[0].ok).toBe(true)
  } finally {
    await a.end()
    await b.end()
  }
})

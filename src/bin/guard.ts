/**
 * The guard: a small Node process between the runner and the program it runs. It exists for one reason: a
 * runner killed with SIGKILL cannot stop its program, and the program would go on running without the slot.
 * The guard notices the runner's death (its IPC channel closes) and stops the program: SIGTERM, then SIGKILL
 * after the grace period.
 *
 * It is passed to `node -e` as source text, so it works the same from `dist`, from a bundle and from `tsx`.
 *
 * Arguments: `-- GRACE_MILLIS COMMAND [ARGS...]`. Messages to the runner: `{ type: "spawned", pid }`,
 * `{ type: "exit", code, signal }`, `{ type: "error", message }`. Messages from the runner:
 * `{ type: "signal", signal }`, forwarded to the program.
 *
 * @since 0.1.0
 */

/**
 * The guard's source, CommonJS for `node -e`.
 *
 * @since 0.1.0
 * @category guard
 */
export const guardSource = `
"use strict"
const { spawn } = require("node:child_process")
const [graceText, command, ...args] = process.argv.slice(1)
const grace = Number(graceText)
let child
let done = false
const send = (message, then) => {
  if (process.connected) process.send(message, then === undefined ? undefined : () => then())
  else if (then !== undefined) then()
}
const finish = (code) => {
  done = true
  process.exitCode = code
  if (process.connected) process.disconnect()
}
const forward = (signal) => {
  if (!done && child !== undefined && child.exitCode === null && child.signalCode === null) {
    try { child.kill(signal) } catch (error) { send({ type: "warning", message: String(error && error.message) }) }
  }
}
// A keyboard interrupt reaches the whole process group; the runner decides what to forward.
process.on("SIGINT", () => undefined)
process.on("SIGTERM", () => forward("SIGTERM"))
process.on("message", (message) => {
  if (message && message.type === "signal") forward(message.signal)
})
process.on("disconnect", () => {
  if (done) return
  forward("SIGTERM")
  const timer = setTimeout(() => forward("SIGKILL"), grace)
  if (child !== undefined) child.once("exit", () => clearTimeout(timer))
})
const start = () => {
  try {
    child = spawn(command, args, { stdio: "inherit" })
  } catch (error) {
    send({ type: "error", message: String(error && error.message) }, () => finish(127))
    return
  }
  child.on("spawn", () => send({ type: "spawned", pid: child.pid }))
  child.on("error", (error) => {
    if (child.pid === undefined) send({ type: "error", message: String(error && error.message) }, () => finish(127))
  })
  child.on("exit", (code, signal) => {
    send({ type: "exit", code, signal }, () => finish(code === null ? 1 : code))
  })
}
start()
`

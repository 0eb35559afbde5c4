/**
 * What the command needs around it: the platform services of `@effect/cli`, a one-line logger on stderr, an
 * exit status, signal handling, and errors turned into one clear line without secrets.
 *
 * @since 0.1.0
 */
import { constants } from "node:os"
import * as ValidationError from "@effect/cli/ValidationError"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Path from "@effect/platform/Path"
import * as Terminal from "@effect/platform/Terminal"
import * as Cause from "effect/Cause"
import * as Console from "effect/Console"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import * as HashMap from "effect/HashMap"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"

/**
 * A failure of the command itself, with the exit status it ends the process with (2 for usage errors).
 *
 * @since 0.1.0
 * @category errors
 */
export class CliError extends Data.TaggedError("CliError")<{
  readonly message: string
  readonly exitCode: number
}> {}

/**
 * The exit status a command asks for when it succeeds; 0 unless set.
 *
 * @since 0.1.0
 * @category services
 */
export class ExitCode extends Context.Tag("the-lone-dyno/bin/ExitCode")<ExitCode, Ref.Ref<number>>() {}

/**
 * Sets the exit status of a successful command.
 *
 * @since 0.1.0
 * @category services
 */
export const setExitCode = (code: number): Effect.Effect<void, never, ExitCode> =>
  Effect.flatMap(ExitCode, (ref) => Ref.set(ref, code))

/**
 * The exit status of a process killed by a signal, as shells report it: 128 plus the signal number.
 *
 * @since 0.1.0
 * @category signals
 */
export const signalExitCode = (signal: string): number =>
  128 + ((constants.signals as Record<string, number | undefined>)[signal] ?? 15)

// Secrets seen so far (connection URLs and their passwords): scrubbed from every line printed.
const secrets = new Set<string>()

/**
 * Remembers the secrets of a connection URL, so that no message printed afterwards shows them.
 *
 * @since 0.1.0
 * @category redaction
 */
export const rememberSecrets = (url: Redacted.Redacted): void => {
  const text = Redacted.value(url)
  secrets.add(text)
  try {
    const parsed = new URL(text)
    if (parsed.password !== "") {
      secrets.add(parsed.password)
      secrets.add(decodeURIComponent(parsed.password))
    }
  } catch {
    // Not a URL (a key=value connection string): the whole text is still scrubbed.
  }
  for (const match of text.matchAll(/password\s*=\s*'?([^'\s]+)/gi)) {
    if (match[1] !== undefined) secrets.add(match[1])
  }
}

/**
 * Replaces every remembered secret in `text` with `***`.
 *
 * @since 0.1.0
 * @category redaction
 */
export const redact = (text: string): string => {
  let out = text
  for (const secret of [...secrets].sort((a, b) => b.length - a.length)) {
    if (secret.length > 0) out = out.split(secret).join("***")
  }
  return out
}

/**
 * Where a connection URL points, without its password: `user@host:port/database`.
 *
 * @since 0.1.0
 * @category redaction
 */
export const describeUrl = (url: Redacted.Redacted): string => {
  try {
    const parsed = new URL(Redacted.value(url))
    const user = parsed.username === "" ? "" : `${decodeURIComponent(parsed.username)}@`
    const host = parsed.host === "" ? (parsed.searchParams.get("host") ?? "localhost") : parsed.host
    return `${user}${host}${parsed.pathname === "/" ? "" : parsed.pathname}`
  } catch {
    return "the configured server"
  }
}

/**
 * The message of any error value, following causes that carry none (such as an `AggregateError` of refused
 * connections).
 *
 * @since 0.1.0
 * @category errors
 */
export const errorText = (error: unknown): string => {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return [...new Set(error.errors.map(errorText))].join("; ")
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code
    if (error.message !== "") return error.message
    if (typeof code === "string") return code
    return error.name
  }
  return String(error)
}

const levelWidth = 5

/**
 * The library's and the command's logs: one line each on stderr, `the-lone-dyno LEVEL message key=value`.
 *
 * @since 0.1.0
 * @category logging
 */
export const logger: Logger.Logger<unknown, void> = Logger.make(({ annotations, cause, logLevel, message }) => {
  const text = (Array.isArray(message) ? message : [message]).map((part) => String(part)).join(" ")
  const fields = HashMap.reduce(annotations, [] as Array<string>, (acc, value, key) => {
    acc.push(`${key}=${typeof value === "string" && !/\s/.test(value) ? value : JSON.stringify(value)}`)
    return acc
  })
  if (!Cause.isEmpty(cause)) fields.push(`cause=${JSON.stringify(Cause.pretty(cause).split("\n")[0])}`)
  const suffix = fields.length > 0 ? ` ${fields.join(" ")}` : ""
  const line = `the-lone-dyno ${logLevel.label.padEnd(levelWidth)} ${text}${suffix}`
  process.stderr.write(`${redact(line)}\n`)
})

// A terminal that never prompts: this command asks nothing interactively, so no prompt is ever shown.
const terminal = Terminal.Terminal.of({
  columns: Effect.sync(() => process.stdout.columns ?? 80),
  rows: Effect.sync(() => process.stdout.rows ?? 24),
  isTTY: Effect.sync(() => process.stdout.isTTY === true),
  readInput: Effect.die(new Error("the-lone-dyno does not read interactive input")),
  readLine: Effect.fail(new Terminal.QuitException()),
  display: (text) => Console.log(text.replace(/\n$/, ""))
})

/**
 * The services `@effect/cli` asks for. Nothing here touches files or reads the terminal, so plain versions
 * do: a POSIX `Path`, a `FileSystem` that refuses everything, and a `Terminal` that never prompts.
 *
 * @since 0.1.0
 * @category layers
 */
export const environment: Layer.Layer<FileSystem.FileSystem | Path.Path | Terminal.Terminal> = Layer.mergeAll(
  FileSystem.layerNoop({}),
  Path.layer,
  Layer.succeed(Terminal.Terminal, terminal)
)

const colors = (stream: NodeJS.WriteStream) => stream.isTTY === true && (process.env.NO_COLOR ?? "") === ""
// biome-ignore lint/suspicious/noControlCharactersInRegex: matches ANSI escape sequences
const ansi = /\u001b\[[0-9;]*m/g
const plain = (args: ReadonlyArray<unknown>) =>
  args.map((arg) => (typeof arg === "string" ? arg.replace(ansi, "") : arg))

/**
 * The `Console` of the command: the default one, without colour codes when the output is not a terminal or
 * `NO_COLOR` is set.
 *
 * @since 0.1.0
 * @category output
 */
export const withOutput = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.flatMap(Effect.console, (base) =>
    Console.withConsole(effect, {
      ...base,
      log: (...args) => base.log(...(colors(process.stdout) ? args : plain(args))),
      error: (...args) => base.error(...(colors(process.stderr) ? args : plain(args)))
    })
  )

type Forwarder = (signal: NodeJS.Signals) => void
const forwarders = new Set<Forwarder>()

/**
 * While the returned scope is open, SIGINT and SIGTERM sent to this process go to `forward` instead of
 * stopping the command.
 *
 * @since 0.1.0
 * @category signals
 */
export const forwardSignals = (forward: Forwarder) =>
  Effect.acquireRelease(
    Effect.sync(() => forwarders.add(forward)),
    () => Effect.sync(() => forwarders.delete(forward))
  )

const usageFailure = (error: unknown) => ValidationError.isValidationError(error)

/**
 * Turns a failure into one line on stderr and an exit status: 2 for usage errors (they were already
 * explained by the parser, or are configuration errors), 1 for the rest.
 *
 * @since 0.1.0
 * @category errors
 */
export const report = (cause: Cause.Cause<unknown>): Effect.Effect<number> => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure)) {
    const error = failure.value
    // @effect/cli prints its own explanation of a parse error.
    if (usageFailure(error)) return Effect.succeed(2)
    if (error instanceof CliError) {
      return Effect.as(Console.error(redact(`the-lone-dyno: ${error.message}`)), error.exitCode)
    }
    const tagged = error as { _tag?: unknown; message?: unknown }
    const exitCode = tagged._tag === "LoneDynoConfigError" ? 2 : 1
    return Effect.as(Console.error(redact(`the-lone-dyno: ${errorText(error)}`)), exitCode)
  }
  const defect = Cause.dieOption(cause)
  const text = Option.isSome(defect) ? errorText(defect.value) : Cause.pretty(cause).split("\n")[0]
  return Effect.as(Console.error(redact(`the-lone-dyno: unexpected failure: ${text}`)), 1)
}

/**
 * Runs the command as the process: SIGINT and SIGTERM stop it (or go to a running program, see
 * {@link forwardSignals}), failures are reported, and the process exits with the command's status.
 *
 * @since 0.1.0
 * @category running
 */
export const runMain = (program: Effect.Effect<void, unknown, ExitCode>): void => {
  let interruptedBy: NodeJS.Signals | undefined
  let running: Fiber.RuntimeFiber<void, unknown> | undefined
  const main = Effect.gen(function* () {
    const code = yield* Ref.make(0)
    running = yield* Effect.fork(Effect.provideService(program, ExitCode, code))
    const exit = yield* Fiber.await(running)
    if (Exit.isSuccess(exit)) return yield* Ref.get(code)
    if (Cause.isInterruptedOnly(exit.cause)) return signalExitCode(interruptedBy ?? "SIGTERM")
    return yield* report(exit.cause)
  }).pipe(withOutput, Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
  const fiber = Effect.runFork(main)
  const onSignal = (signal: NodeJS.Signals) => {
    if (forwarders.size > 0) {
      for (const forward of forwarders) forward(signal)
      return
    }
    interruptedBy ??= signal
    const target = (running ?? fiber) as Fiber.RuntimeFiber<unknown, unknown>
    Effect.runFork(Fiber.interruptAs(target, FiberId.none))
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  fiber.addObserver((exit) => {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
    process.exitCode = Exit.isSuccess(exit) ? exit.value : 1
    // Let stdout drain and handles close; force the exit if something still holds the loop open.
    setTimeout(() => process.exit(), 2000).unref()
  })
}

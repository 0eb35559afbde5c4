/**
 * `run`: a program that runs only while this process holds a slot. The program is started through the guard
 * (see `guard.ts`) and stopped with SIGTERM, then SIGKILL after a grace period, when the slot is lost.
 *
 * @since 0.1.0
 */
import { type ChildProcess, spawn } from "node:child_process"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as LoneDyno from "../LoneDyno.js"
import type { LoneDynoError } from "../LoneDynoError.js"
import { guardSource } from "./guard.js"
import { CliError, type ExitCode, errorText, forwardSignals, setExitCode, signalExitCode } from "./runtime.js"

/**
 * What `run` was asked to do.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunOptions {
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly dynos: number | undefined
  readonly keyBase: string | undefined
  readonly processType: string | undefined
  readonly grace: Duration.Duration
}

/**
 * How the program ended.
 *
 * @since 0.1.0
 * @category models
 */
export type ProgramExit =
  | { readonly _tag: "Exited"; readonly code: number }
  | { readonly _tag: "Killed"; readonly signal: string }
  | { readonly _tag: "NotStarted"; readonly message: string }

/**
 * The exit status `run` ends with for a program that ended this way.
 *
 * @since 0.1.0
 * @category models
 */
export const exitCodeOf = (exit: ProgramExit): number =>
  exit._tag === "Exited" ? exit.code : exit._tag === "Killed" ? signalExitCode(exit.signal) : 127

interface GuardMessage {
  readonly type: "spawned" | "exit" | "error" | "warning"
  readonly pid?: number
  readonly code?: number | null
  readonly signal?: string | null
  readonly message?: string
}

const send = (guard: ChildProcess, signal: NodeJS.Signals) => {
  if (guard.connected) guard.send({ type: "signal", signal }, () => undefined)
  else if (guard.exitCode === null && guard.signalCode === null) guard.kill(signal)
}

/**
 * Starts the program through the guard. The scope owns it: closing the scope while the program runs stops it
 * with SIGTERM, then SIGKILL after `grace`. While it runs, SIGINT and SIGTERM sent to this process are
 * forwarded to it. The result completes when the program ends.
 *
 * @since 0.1.0
 * @category running
 */
export const start = (
  command: string,
  args: ReadonlyArray<string>,
  grace: Duration.Duration
): Effect.Effect<Deferred.Deferred<ProgramExit>, never, Scope.Scope> =>
  Effect.gen(function* () {
    const ended = yield* Deferred.make<ProgramExit>()
    const guard = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const child = spawn(
          process.execPath,
          ["-e", guardSource, "--", String(Duration.toMillis(grace)), command, ...args],
          { stdio: ["inherit", "inherit", "inherit", "ipc"] }
        )
        let reported: ProgramExit | undefined
        child.on("message", (message: GuardMessage) => {
          if (message.type === "exit") {
            reported =
              typeof message.signal === "string"
                ? { _tag: "Killed", signal: message.signal }
                : { _tag: "Exited", code: message.code ?? 1 }
          } else if (message.type === "error") {
            reported = { _tag: "NotStarted", message: message.message ?? "unknown error" }
          }
        })
        child.on("error", (error) => {
          Deferred.unsafeDone(ended, Effect.succeed({ _tag: "NotStarted", message: errorText(error) }))
        })
        child.on("exit", (code, signal) => {
          const exit: ProgramExit =
            reported ??
            (signal === null ? { _tag: "Exited", code: code ?? 1 } : { _tag: "Killed", signal: String(signal) })
          Deferred.unsafeDone(ended, Effect.succeed(exit))
        })
        return child
      }),
      (guard) =>
        Effect.gen(function* () {
          if (yield* Deferred.isDone(ended)) return
          yield* Effect.logInfo("Stopping the program").pipe(Effect.annotateLogs("grace", Duration.format(grace)))
          send(guard, "SIGTERM")
          const stopped = yield* Deferred.await(ended).pipe(Effect.timeoutOption(grace))
          if (Option.isSome(stopped)) return
          yield* Effect.logWarning("The program did not stop within the grace period; killing it")
          send(guard, "SIGKILL")
          const killed = yield* Deferred.await(ended).pipe(Effect.timeoutOption(Duration.seconds(5)))
          if (Option.isNone(killed)) guard.kill("SIGKILL")
        })
    )
    yield* forwardSignals((signal) => send(guard, signal))
    return ended
  })

/**
 * Stands by for a slot, runs the program while holding it, and ends with the program's exit status when the
 * program ends on its own. A lost slot stops the program and goes back to standing by.
 *
 * @since 0.1.0
 * @category running
 */
export const run = (options: RunOptions): Effect.Effect<void, LoneDynoError | CliError, LoneDyno.LoneDyno | ExitCode> =>
  Effect.gen(function* () {
    const finished = yield* Deferred.make<ProgramExit>()
    const handle = yield* LoneDyno.exclusive(
      (signal) =>
        Effect.gen(function* () {
          yield* Effect.logInfo("Holding a slot; starting the program").pipe(
            Effect.annotateLogs({ slot: signal.slot, command: options.command })
          )
          const exit = yield* Effect.scoped(
            Effect.flatMap(start(options.command, options.args, options.grace), Deferred.await)
          )
          yield* Deferred.succeed(finished, exit)
          return yield* Effect.never
        }),
      {
        dynos: options.dynos,
        keyBase: options.keyBase,
        processType: options.processType ?? false
      }
    )
    const state = yield* handle.state
    if (state._tag === "Skipped") {
      yield* Effect.logInfo("Not taking part; the program does not run").pipe(
        Effect.annotateLogs("reason", state.reason)
      )
      return
    }
    const failed = handle.changes.pipe(
      Stream.filter((s) => s._tag === "Failed"),
      Stream.runHead,
      Effect.flatMap((s) => (Option.isSome(s) && s.value._tag === "Failed" ? Effect.fail(s.value.error) : Effect.never))
    )
    const exit = yield* Effect.raceFirst(Deferred.await(finished), failed)
    if (exit._tag === "NotStarted") {
      return yield* new CliError({ message: `cannot start ${options.command}: ${exit.message}`, exitCode: 127 })
    }
    yield* Effect.logInfo("The program ended; releasing the slot").pipe(
      Effect.annotateLogs(exit._tag === "Exited" ? { code: exit.code } : { signal: exit.signal })
    )
    yield* setExitCode(exitCodeOf(exit))
  }).pipe(Effect.scoped)

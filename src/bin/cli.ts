/**
 * The `the-lone-dyno` command: `status`, `signal` and `run`, on `@effect/cli`.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Span from "@effect/cli/HelpDoc/Span"
import * as Options from "@effect/cli/Options"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Config from "effect/Config"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as LoneDyno from "../LoneDyno.js"
import * as LoneDynoConfig from "../LoneDynoConfig.js"
import type { LoneDynoConfigError } from "../LoneDynoError.js"
import { run } from "./run.js"
import { CliError, describeUrl, type ExitCode, environment, errorText, rememberSecrets } from "./runtime.js"

const url = Options.redacted("url").pipe(
  Options.withDescription("PostgreSQL connection URL. Default: the DATABASE_URL environment variable."),
  Options.optional
)
const keyBase = Options.text("key-base").pipe(
  Options.withDescription(`Names the set of slots. Default: "${LoneDynoConfig.defaults.keyBase}".`),
  Options.optional
)
const dynos = Options.integer("dynos").pipe(
  Options.withDescription("How many slots there are (slots 0 to N-1). Default 1."),
  Options.optional
)

// Checked before connecting, so that a mistyped option is reported even when the server is down.
const validate = (options: {
  readonly keyBase: Option.Option<string>
  readonly dynos: Option.Option<number>
}): Effect.Effect<void, LoneDynoConfigError> =>
  Effect.all([
    Option.match(options.keyBase, { onNone: () => Effect.void, onSome: LoneDynoConfig.validateKeyBase }),
    Option.match(options.dynos, { onNone: () => Effect.void, onSome: LoneDynoConfig.validateDynos })
  ])

const withDatabase = <A, E>(
  options: {
    readonly url: Option.Option<Redacted.Redacted>
    readonly keyBase: Option.Option<string>
    readonly dynos: Option.Option<number>
  },
  effect: Effect.Effect<A, E, LoneDyno.LoneDyno | ExitCode>
) => Effect.zipRight(validate(options), Effect.provide(effect, connect(options.url)))

const connectionFailure = (target: string) => (error: unknown) => {
  const cause = (error as { cause?: unknown }).cause
  return new CliError({
    message: `cannot connect to PostgreSQL at ${target}: ${errorText(cause ?? error)}`,
    exitCode: 1
  })
}

/**
 * The library, connected to the URL given with `--url` or in `DATABASE_URL`. Fails with exit status 2 when
 * there is neither, and with status 1 when the server cannot be reached.
 *
 * @since 0.1.0
 * @category layers
 */
export const connect = (given: Option.Option<Redacted.Redacted>): Layer.Layer<LoneDyno.LoneDyno, unknown> =>
  Layer.unwrapEffect(
    Effect.gen(function* () {
      const fromEnv = yield* Config.option(Config.redacted("DATABASE_URL"))
      const chosen = Option.orElse(given, () => fromEnv).pipe(
        Option.filter((value) => Redacted.value(value).trim() !== "")
      )
      if (Option.isNone(chosen)) {
        return yield* new CliError({
          message: "no database given: set DATABASE_URL or pass --url postgres://user@host:5432/db",
          exitCode: 2
        })
      }
      rememberSecrets(chosen.value)
      const target = describeUrl(chosen.value)
      const postgres = PgClient.layer({
        url: chosen.value,
        maxConnections: 2,
        connectTimeout: Duration.seconds(5),
        applicationName: "the-lone-dyno cli"
      }).pipe(Layer.mapError(connectionFailure(target)))
      return LoneDyno.layer().pipe(Layer.provide(postgres))
    })
  )

const examples = (...lines: ReadonlyArray<string>) =>
  HelpDoc.blocks([HelpDoc.p("Examples:"), ...lines.map((line) => HelpDoc.p(Span.code(`  ${line}`)))])

const describe = (summary: string, ...lines: ReadonlyArray<string>) =>
  HelpDoc.blocks([HelpDoc.p(summary), examples(...lines)])

const pad = (cells: ReadonlyArray<string>, widths: ReadonlyArray<number>) =>
  cells
    .map((cell, i) => cell.padEnd(widths[i] ?? 0))
    .join("  ")
    .trimEnd()

/**
 * The slots and their holders as a table.
 *
 * @since 0.1.0
 * @category formatting
 */
export const table = (holders: ReadonlyArray<LoneDyno.SlotHolder>): string => {
  const header = ["SLOT", "HOLDER", "PID", "SINCE", "ADDRESS"]
  const rows = holders.map((h) =>
    h.held
      ? [
          String(h.slot),
          h.applicationName || "(unnamed)",
          String(h.pid ?? ""),
          h.since?.toISOString() ?? "",
          h.clientAddress ?? "local socket"
        ]
      : [String(h.slot), "(free)", "", "", ""]
  )
  const widths = header.map((title, i) => Math.max(title.length, ...rows.map((row) => row[i]?.length ?? 0)))
  return [pad(header, widths), ...rows.map((row) => pad(row, widths))].join("\n")
}

const status = Command.make(
  "status",
  { url, keyBase, dynos, json: Options.boolean("json").pipe(Options.withDescription("Print JSON instead of a table")) },
  (options) =>
    withDatabase(
      options,
      Effect.gen(function* () {
        const holders = yield* LoneDyno.holders({
          keyBase: Option.getOrUndefined(options.keyBase),
          dynos: Option.getOrUndefined(options.dynos)
        })
        const held = holders.filter((h) => h.held).length
        if (options.json) {
          const slots = holders.map((h) => ({
            slot: h.slot,
            held: h.held,
            pid: h.pid ?? null,
            applicationName: h.applicationName ?? null,
            since: h.since?.toISOString() ?? null,
            clientAddress: h.clientAddress ?? null
          }))
          return yield* Console.log(JSON.stringify({ held, dynos: holders.length, slots }, null, 2))
        }
        yield* Console.log(`${held} of ${holders.length} slot${holders.length === 1 ? "" : "s"} held`)
        yield* Console.log(table(holders))
      })
    )
).pipe(
  Command.withDescription(
    describe(
      "Show the slots of a key base and who holds each: the holder's application name (which names its dyno), " +
        "server pid, when its session started, and its address.",
      "the-lone-dyno status --key-base nightly-report",
      "the-lone-dyno status --key-base mailer --dynos 3 --json | jq '.slots[] | select(.held)'"
    )
  )
)

const signal = Command.make(
  "signal",
  {
    url,
    keyBase,
    dynos,
    slot: Options.integer("slot").pipe(
      Options.withDescription("Send to this slot only. Default: every slot."),
      Options.optional
    ),
    payload: Args.text({ name: "PAYLOAD" }).pipe(Args.withDescription("Any text under 8000 bytes, even empty"))
  },
  (options) =>
    withDatabase(
      options,
      Effect.gen(function* () {
        const heard = yield* LoneDyno.signal(options.payload, {
          keyBase: Option.getOrUndefined(options.keyBase),
          dynos: Option.getOrUndefined(options.dynos),
          slot: Option.getOrUndefined(options.slot)
        })
        yield* Console.log(`Sent; ${heard} holder${heard === 1 ? " was" : "s were"} there to hear it`)
      })
    )
).pipe(
  Command.withDescription(
    describe(
      "Send a payload to the processes that hold the slots of a key base (to their signal.watch() streams), " +
        "and say how many holders were there to hear it.",
      "the-lone-dyno signal reload --key-base mailer --dynos 3",
      "the-lone-dyno signal '{\"pause\":true}' --key-base mailer --dynos 3 --slot 0"
    )
  )
)

const runCommand = Command.make(
  "run",
  {
    url,
    keyBase,
    dynos,
    processType: Options.text("process-type").pipe(
      Options.withDescription(
        "Take part only when $DYNO contains this text (such as web or worker). Default: take part everywhere."
      ),
      Options.optional
    ),
    grace: Options.integer("grace").pipe(
      Options.withDescription("Seconds between SIGTERM and SIGKILL when the program must stop. Default 10."),
      Options.withDefault(10)
    ),
    command: Args.text({ name: "COMMAND" }).pipe(Args.atLeast(1), Args.withDescription("The program and its arguments"))
  },
  (options) =>
    Effect.zipRight(
      Number.isInteger(options.grace) && options.grace >= 0
        ? Effect.void
        : new CliError({ message: `--grace must be 0 or more seconds, got ${options.grace}`, exitCode: 2 }),
      withDatabase(
        options,
        Effect.gen(function* () {
          const [command, ...args] = options.command
          yield* run({
            command,
            args,
            dynos: Option.getOrUndefined(options.dynos),
            keyBase: Option.getOrUndefined(options.keyBase),
            processType: Option.getOrUndefined(options.processType),
            grace: Duration.seconds(options.grace)
          })
        })
      )
    )
).pipe(
  Command.withDescription(
    describe(
      "Run a program only while this process holds a slot. It stands by until a slot is free, then starts the " +
        "program with this process's stdin, stdout and stderr. SIGTERM and SIGINT are forwarded to the program. " +
        "If the slot is lost, the program is stopped (SIGTERM, then SIGKILL after --grace seconds) and the " +
        "command stands by again. When the program exits, the slot is released and the command exits with the " +
        "program's status (128 + the signal number if a signal killed it). Put -- before the program.",
      "the-lone-dyno run --key-base scheduler -- node scheduler.js",
      "the-lone-dyno run --key-base mailer --dynos 3 --process-type worker --grace 25 -- ./bin/mailer --verbose"
    )
  )
)

const root = Command.make("the-lone-dyno").pipe(
  Command.withDescription(
    describe(
      "Operate the-lone-dyno from a shell: see who holds the slots of a key base, signal the holders, or run " +
        "any program on at most N processes. The database comes from DATABASE_URL or --url.",
      "the-lone-dyno status --key-base nightly-report",
      "the-lone-dyno signal reload --key-base nightly-report",
      "the-lone-dyno run --key-base nightly-report -- node report.js"
    )
  ),
  Command.withSubcommands([status, signal, runCommand])
)

const version = (() => {
  try {
    const manifest = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: unknown
    }
    return typeof manifest.version === "string" ? manifest.version : "unknown"
  } catch {
    return "unknown"
  }
})()

/**
 * The whole command, given the process's argv (the first two entries, node and the script, are skipped).
 *
 * @since 0.1.0
 * @category commands
 */
export const cli = (argv: ReadonlyArray<string>): Effect.Effect<void, unknown, ExitCode> =>
  Command.run(root, { name: "the-lone-dyno", version })(argv).pipe(Effect.provide(environment))

/**
 * Options of the library, their documented defaults, their validation, and how to read them from the
 * environment.
 *
 * @since 0.1.0
 */
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { LoneDynoConfigError } from "./LoneDynoError.js"

/**
 * Which processes may take part: a substring of `$DYNO`, a pattern tested against it, or `false` for every
 * process. When `$DYNO` is not set the check is skipped, so a laptop always takes part.
 *
 * @since 0.1.0
 * @category models
 */
export type ProcessType = string | RegExp | false

/**
 * Defaults for every `exclusive`, `signal` and `holders` call, and settings of the lock session.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoneDynoOptions {
  /** How many processes may run a block at once: slots `0..dynos-1`. Default 1. */
  readonly dynos?: number | undefined
  /** Names the set of slots; blocks with different key bases do not exclude each other. */
  readonly keyBase?: string | undefined
  /** Which processes take part. Default: a `$DYNO` that starts with `web`. */
  readonly processType?: ProcessType | undefined
  /**
   * Connection URL of the lock session. Default: the settings of the app's `PgClient`. Give a direct URL
   * here when the app's connections go through a pooler such as PgBouncer.
   */
  readonly url?: Redacted.Redacted | string | undefined
  /** `application_name` of the lock session. Default `the-lone-dyno <$DYNO or host:pid>`. */
  readonly applicationName?: string | undefined
  /** How often the session checks that it is alive and still holds its slots. Default 2 seconds. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /** Deadline of every round trip of the lock session, the heartbeat included. Default 3 seconds. */
  readonly heartbeatTimeout?: Duration.DurationInput | undefined
  /** How often a standby retries when nothing wakes it sooner. Default 1 second. */
  readonly standbyInterval?: Duration.DurationInput | undefined
  /** Deadline for opening the lock session. Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Accept a connection that goes through a pooler, at the risk of broken locks. Default false. */
  readonly allowPooler?: boolean | undefined
}

/**
 * The options after validation, with every default applied.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedOptions {
  readonly dynos: number
  readonly keyBase: string
  readonly processType: ProcessType
  readonly url: Option.Option<Redacted.Redacted>
  readonly applicationName: Option.Option<string>
  readonly heartbeatInterval: Duration.Duration
  readonly heartbeatTimeout: Duration.Duration
  readonly standbyInterval: Duration.Duration
  readonly connectTimeout: Duration.Duration
  readonly allowPooler: boolean
}

/**
 * The defaults, in one place.
 *
 * @since 0.1.0
 * @category defaults
 */
export const defaults = {
  dynos: 1,
  keyBase: "the_lone_dyno_hi_ho_silver",
  processType: /^web/ as ProcessType,
  heartbeatInterval: Duration.seconds(2),
  heartbeatTimeout: Duration.seconds(3),
  standbyInterval: Duration.seconds(1),
  connectTimeout: Duration.seconds(5),
  allowPooler: false
} as const

/**
 * The largest `dynos` accepted. Every slot is tried in one statement and signalled in one statement, so the
 * bound keeps both cheap.
 *
 * @since 0.1.0
 * @category defaults
 */
export const maxDynos = 10_000

/**
 * The largest key base accepted, in UTF-8 bytes.
 *
 * @since 0.1.0
 * @category defaults
 */
export const maxKeyBaseBytes = 10_000

/**
 * TCP keepalive settings the lock session asks the server for. The server notices a client that vanished
 * without closing its socket after `idle + interval * count` seconds (11) and frees its slots; the heartbeat
 * interval plus its timeout must stay below that, so a holder cut off from the server always stops first.
 *
 * @since 0.1.0
 * @category defaults
 */
export const serverKeepalive = { idle: 5, interval: 2, count: 3 } as const

const fail = (reason: LoneDynoConfigError["reason"], message: string) =>
  Effect.fail(new LoneDynoConfigError({ reason, message }))

const show = (value: unknown) => {
  if (typeof value === "string") return JSON.stringify(value)
  if (value instanceof RegExp) return String(value)
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * Checks a `dynos` value.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateDynos = (dynos: unknown): Effect.Effect<number, LoneDynoConfigError> =>
  typeof dynos === "number" && Number.isInteger(dynos) && dynos >= 1 && dynos <= maxDynos
    ? Effect.succeed(dynos)
    : fail("InvalidDynos", `dynos must be a whole number from 1 to ${maxDynos}, got ${show(dynos)}`)

/**
 * Checks a `keyBase` value.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateKeyBase = (keyBase: unknown): Effect.Effect<string, LoneDynoConfigError> => {
  if (typeof keyBase !== "string" || keyBase.length === 0) {
    return fail("InvalidKeyBase", `keyBase must be a non-empty string, got ${show(keyBase)}`)
  }
  if (Buffer.byteLength(keyBase, "utf8") > maxKeyBaseBytes) {
    return fail("InvalidKeyBase", `keyBase must be at most ${maxKeyBaseBytes} bytes in UTF-8`)
  }
  return Effect.succeed(keyBase)
}

/**
 * Checks a `processType` value.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateProcessType = (processType: unknown): Effect.Effect<ProcessType, LoneDynoConfigError> =>
  processType === false || processType instanceof RegExp || (typeof processType === "string" && processType !== "")
    ? Effect.succeed(processType as ProcessType)
    : fail("InvalidProcessType", `processType must be a non-empty string, a RegExp or false, got ${show(processType)}`)

/**
 * Checks a duration option.
 *
 * @since 0.1.0
 * @category validation
 */
export const validateDuration = (
  name: string,
  input: unknown
): Effect.Effect<Duration.Duration, LoneDynoConfigError> =>
  (typeof input === "number" || typeof input === "bigint") && input < 0
    ? fail("InvalidDuration", `${name} must be a finite, non-negative duration, got ${String(input)}`)
    : Option.match(Duration.decodeUnknown(input), {
        onNone: () =>
          fail(
            "InvalidDuration",
            `${name} must be a duration such as 500, "2 seconds" or "100 millis", got ${show(input)}`
          ),
        onSome: (duration) =>
          Duration.isFinite(duration) && Duration.toMillis(duration) >= 0
            ? Effect.succeed(duration)
            : fail("InvalidDuration", `${name} must be a finite, non-negative duration, got ${show(input)}`)
      })

const optional = <A>(
  value: unknown,
  fallback: A,
  check: (value: unknown) => Effect.Effect<A, LoneDynoConfigError>
): Effect.Effect<A, LoneDynoConfigError> => (value === undefined ? Effect.succeed(fallback) : check(value))

/**
 * Validates layer options and applies the defaults.
 *
 * @since 0.1.0
 * @category validation
 */
export const resolve = (options: LoneDynoOptions = {}): Effect.Effect<ResolvedOptions, LoneDynoConfigError> =>
  Effect.gen(function* () {
    if (options === null || typeof options !== "object") {
      return yield* fail("InvalidOption", `options must be an object, got ${show(options)}`)
    }
    if ("background" in options) {
      return yield* fail(
        "InvalidOption",
        "background cannot be a layer default, because it decides what exclusive returns; pass it per call"
      )
    }
    const resolved: ResolvedOptions = {
      dynos: yield* optional(options.dynos, defaults.dynos, validateDynos),
      keyBase: yield* optional(options.keyBase, defaults.keyBase, validateKeyBase),
      processType: yield* optional(options.processType, defaults.processType, validateProcessType),
      url: yield* validateUrl(options.url),
      applicationName: Option.fromNullable(options.applicationName),
      heartbeatInterval: yield* optional(options.heartbeatInterval, defaults.heartbeatInterval, (d) =>
        validateDuration("heartbeatInterval", d)
      ),
      heartbeatTimeout: yield* optional(options.heartbeatTimeout, defaults.heartbeatTimeout, (d) =>
        validateDuration("heartbeatTimeout", d)
      ),
      standbyInterval: yield* optional(options.standbyInterval, defaults.standbyInterval, (d) =>
        validateDuration("standbyInterval", d)
      ),
      connectTimeout: yield* optional(options.connectTimeout, defaults.connectTimeout, (d) =>
        validateDuration("connectTimeout", d)
      ),
      allowPooler: options.allowPooler === true
    }
    const detection = Duration.seconds(serverKeepalive.idle + serverKeepalive.interval * serverKeepalive.count)
    if (!Duration.lessThan(Duration.sum(resolved.heartbeatInterval, resolved.heartbeatTimeout), detection)) {
      return yield* fail(
        "InvalidDuration",
        `heartbeatInterval plus heartbeatTimeout must stay under ${Duration.format(detection)}, the time the server ` +
          "takes to free the slots of a vanished client; otherwise a cut-off holder could still run after a standby " +
          "took over"
      )
    }
    if (Duration.toMillis(resolved.heartbeatInterval) < 10 || Duration.toMillis(resolved.heartbeatTimeout) < 10) {
      return yield* fail("InvalidDuration", "heartbeatInterval and heartbeatTimeout must be at least 10 millis")
    }
    if (Duration.toMillis(resolved.standbyInterval) < 10) {
      return yield* fail("InvalidDuration", "standbyInterval must be at least 10 millis")
    }
    return resolved
  })

const validateUrl = (url: unknown): Effect.Effect<Option.Option<Redacted.Redacted>, LoneDynoConfigError> => {
  if (url === undefined) return Effect.succeed(Option.none())
  if (Redacted.isRedacted(url)) return Effect.succeed(Option.some(url as Redacted.Redacted))
  if (typeof url === "string" && url !== "") return Effect.succeed(Option.some(Redacted.make(url)))
  return fail("InvalidOption", "url must be a non-empty string or a Redacted string")
}

/**
 * The options read from the environment:
 *
 * | variable | option |
 * | --- | --- |
 * | `LONE_DYNO_DYNOS` | `dynos` |
 * | `LONE_DYNO_KEY_BASE` | `keyBase` |
 * | `LONE_DYNO_PROCESS_TYPE` | `processType` (a substring; `false` skips the check) |
 * | `LONE_DYNO_URL` | `url` |
 * | `LONE_DYNO_HEARTBEAT_INTERVAL` | `heartbeatInterval` |
 * | `LONE_DYNO_HEARTBEAT_TIMEOUT` | `heartbeatTimeout` |
 * | `LONE_DYNO_STANDBY_INTERVAL` | `standbyInterval` |
 * | `LONE_DYNO_ALLOW_POOLER` | `allowPooler` |
 *
 * @since 0.1.0
 * @category config
 */
export const fromEnv: Config.Config<LoneDynoOptions> = Config.all({
  dynos: Config.integer("LONE_DYNO_DYNOS").pipe(
    Config.withDescription("How many processes may run a block at once"),
    Config.option
  ),
  keyBase: Config.string("LONE_DYNO_KEY_BASE").pipe(
    Config.withDescription("Names the set of slots the blocks compete for"),
    Config.option
  ),
  processType: Config.string("LONE_DYNO_PROCESS_TYPE").pipe(
    Config.withDescription("A substring of $DYNO that marks the processes that take part, or false for all"),
    Config.map((text): ProcessType => (text === "false" ? false : text)),
    Config.option
  ),
  url: Config.redacted("LONE_DYNO_URL").pipe(
    Config.withDescription("Direct connection URL for the lock session, when the app's goes through a pooler"),
    Config.option
  ),
  heartbeatInterval: Config.duration("LONE_DYNO_HEARTBEAT_INTERVAL").pipe(
    Config.withDescription("How often the lock session checks itself"),
    Config.option
  ),
  heartbeatTimeout: Config.duration("LONE_DYNO_HEARTBEAT_TIMEOUT").pipe(
    Config.withDescription("Deadline of every round trip of the lock session"),
    Config.option
  ),
  standbyInterval: Config.duration("LONE_DYNO_STANDBY_INTERVAL").pipe(
    Config.withDescription("How often a standby retries when nothing wakes it sooner"),
    Config.option
  ),
  allowPooler: Config.boolean("LONE_DYNO_ALLOW_POOLER").pipe(
    Config.withDescription("Accept a connection through a pooler, at the risk of broken locks"),
    Config.option
  )
}).pipe(
  Config.map((options) => {
    const present: Record<string, unknown> = {}
    for (const [name, value] of Object.entries(options as Record<string, Option.Option<unknown>>)) {
      if (Option.isSome(value)) present[name] = value.value
    }
    return present as LoneDynoOptions
  })
)

/**
 * Reads `$DYNO`, the process name Heroku gives each dyno (`web.1`, `worker.3`), through `Config`.
 *
 * @since 0.1.0
 * @category config
 */
export const dyno: Config.Config<Option.Option<string>> = Config.string("DYNO").pipe(
  Config.withDescription("The name of this process in the fleet, such as web.1"),
  Config.option
)

/**
 * Whether this process takes part, given `$DYNO` and a process type.
 *
 * @example
 * ```ts
 * import { LoneDynoConfig } from "the-lone-dyno"
 * import { Option } from "effect"
 * LoneDynoConfig.matchesProcessType(Option.some("web.12"), /^web/) // true
 * LoneDynoConfig.matchesProcessType(Option.some("worker.1"), "work") // true
 * LoneDynoConfig.matchesProcessType(Option.none(), "worker") // true: no $DYNO, no check
 * ```
 *
 * @since 0.1.0
 * @category process type
 */
export const matchesProcessType = (dyno: Option.Option<string>, processType: ProcessType): boolean => {
  if (processType === false || Option.isNone(dyno)) return true
  if (typeof processType === "string") return dyno.value.includes(processType)
  processType.lastIndex = 0
  return processType.test(dyno.value)
}

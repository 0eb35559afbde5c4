/**
 * Run a block on at most N processes of a fleet, and signal the processes that run it.
 *
 * @since 0.1.0
 */

import { hostname } from "node:os"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Config from "effect/Config"
import type * as ConfigError from "effect/ConfigError"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type pg from "pg"
import * as internal from "./internal/exclusive.js"
import * as Outbox from "./internal/outbox.js"
import * as Session from "./internal/session.js"
import { slotKey, slotKeySpace } from "./Keys.js"
import * as LoneDynoConfig from "./LoneDynoConfig.js"
import { LoneDynoConfigError, type LoneDynoError, LoneDynoSessionError } from "./LoneDynoError.js"
import type { Signal } from "./Signal.js"
import { validatePayload } from "./Signal.js"

/**
 * Per-call options of `exclusive`; each overrides the layer's default.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExclusiveOptions {
  /** How many processes may run this block at once. */
  readonly dynos?: number | undefined
  /** Names the set of slots; use one key base per kind of work. */
  readonly keyBase?: string | undefined
  /** Which processes take part: a substring of `$DYNO`, a RegExp, or `false` for all. */
  readonly processType?: LoneDynoConfig.ProcessType | undefined
  /**
   * `true` (default): return at once and run the block in a supervised background fiber. `false`: try once,
   * run the block in the caller's fiber while holding the slot, release it after.
   */
  readonly background?: boolean | undefined
  /** Foreground only: how long to keep trying for a free slot before giving up. Default: one try. */
  readonly wait?: Duration.DurationInput | undefined
}

/**
 * What a background block is doing.
 *
 * @since 0.1.0
 * @category models
 */
export type ExclusiveState = internal.ExclusiveState

/**
 * The handle of a background block: its state, and a way to stop it early.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExclusiveHandle extends internal.ExclusiveHandle {}

/**
 * Options of `signal`.
 *
 * @since 0.1.0
 * @category models
 */
export interface SignalOptions {
  readonly keyBase?: string | undefined
  readonly dynos?: number | undefined
  /** Send to this slot only. Default: every slot of the key base. */
  readonly slot?: number | undefined
}

/**
 * One slot and, if it is held, who holds it.
 *
 * @since 0.1.0
 * @category models
 */
export interface SlotHolder {
  readonly slot: number
  readonly held: boolean
  /** Server pid of the holding session. */
  readonly pid: number | undefined
  /** The holder's `application_name`, which names its dyno (`the-lone-dyno web.1`). */
  readonly applicationName: string | undefined
  /** When the holding session connected; the slot was taken at that time or later. */
  readonly since: Date | undefined
  /** The holder's address as the server sees it; undefined for a Unix socket. */
  readonly clientAddress: string | undefined
}

/**
 * The service: run blocks on at most N processes, signal them, see who holds what.
 *
 * @since 0.1.0
 * @category models
 */
export interface LoneDynoService {
  /** The layer's options after validation, with every default applied. */
  readonly options: LoneDynoConfig.ResolvedOptions
  /** See the module-level {@link exclusive}. */
  readonly exclusive: {
    <A, E, R>(
      body: (signal: Signal) => Effect.Effect<A, E, R>,
      options: ExclusiveOptions & { readonly background: false }
    ): Effect.Effect<Option.Option<A>, E | LoneDynoError, R>
    <A, E, R>(
      body: (signal: Signal) => Effect.Effect<A, E, R>,
      options?: ExclusiveOptions & { readonly background?: true | undefined }
    ): Effect.Effect<ExclusiveHandle, LoneDynoConfigError, R | Scope.Scope>
  }
  /** See the module-level {@link signal}. */
  readonly signal: (payload: string, options?: SignalOptions) => Effect.Effect<number, LoneDynoError>
  /** See the module-level {@link holders}. */
  readonly holders: (
    options?: Pick<SignalOptions, "keyBase" | "dynos">
  ) => Effect.Effect<ReadonlyArray<SlotHolder>, LoneDynoError>
}

/**
 * The service tag.
 *
 * @since 0.1.0
 * @category tags
 */
export class LoneDyno extends Context.Tag("the-lone-dyno/LoneDyno")<LoneDyno, LoneDynoService>() {}

const connectionSettings = (
  options: LoneDynoConfig.ResolvedOptions,
  config: PgClient.PgClientConfig,
  name: string
): Session.ConnectionSettings => {
  const applicationName = Buffer.from(
    Option.getOrElse(options.applicationName, () => `the-lone-dyno ${name}`),
    "utf8"
  )
    .subarray(0, 63)
    .toString("utf8")
    .replace(/\uFFFD$/, "")
  if (Option.isSome(options.url)) {
    return { config: { connectionString: Redacted.value(options.url.value) }, applicationName }
  }
  const ssl = config.ssl === undefined ? {} : { ssl: config.ssl }
  if (config.url !== undefined) {
    return { config: { connectionString: Redacted.value(config.url), ...ssl }, applicationName }
  }
  const settings: pg.ClientConfig = { ...ssl }
  if (config.path !== undefined || config.host !== undefined) settings.host = config.path ?? config.host
  if (config.port !== undefined) settings.port = config.port
  if (config.database !== undefined) settings.database = config.database
  if (config.username !== undefined) settings.user = config.username
  if (config.password !== undefined) settings.password = Redacted.value(config.password)
  if (config.stream !== undefined) settings.stream = config.stream
  return { config: settings, applicationName }
}

const sqlFailure = (what: string) => (cause: unknown) =>
  new LoneDynoSessionError({
    reason: "Query",
    message: `${what} failed: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

const validateSlot = (slot: unknown, dynos: number) =>
  typeof slot === "number" && Number.isInteger(slot) && slot >= 0 && slot < dynos
    ? Effect.succeed(slot)
    : Effect.fail(
        new LoneDynoConfigError({
          reason: "InvalidSlot",
          message: `slot must be a whole number from 0 to ${dynos - 1} (dynos is ${dynos}), got ${String(slot)}`
        })
      )

/**
 * Builds the service from validated options. The lock session connects on the first `exclusive` call.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: LoneDynoConfig.LoneDynoOptions = {}
): Effect.Effect<LoneDynoService, LoneDynoConfigError | ConfigError.ConfigError, PgClient.PgClient | Scope.Scope> =>
  Effect.gen(function* () {
    const resolved = yield* LoneDynoConfig.resolve(options)
    const sql = yield* PgClient.PgClient
    const dyno = yield* LoneDynoConfig.dyno
    const name = Option.getOrElse(dyno, () => `${hostname()}:${process.pid}`)
    const session = yield* Session.make(resolved, connectionSettings(resolved, sql.config, name))
    const outbox = yield* Outbox.make((text, params) =>
      sql.unsafe<{ req: number; holders: number }>(text, params).pipe(Effect.mapError(sqlFailure("Sending the signal")))
    )

    // Statements on the app's pool may have to open a connection first.
    const deadline = Duration.sum(resolved.connectTimeout, resolved.heartbeatTimeout)
    const withDeadline =
      (what: string) =>
      <A, E, R>(effect: Effect.Effect<A, E, R>) =>
        Effect.timeoutFail(effect, {
          duration: deadline,
          onTimeout: () =>
            new LoneDynoSessionError({
              reason: "Timeout",
              message: `${what} missed its ${Duration.format(deadline)} deadline`
            })
        })

    const callOptions = (call: ExclusiveOptions | SignalOptions | undefined) =>
      Effect.gen(function* () {
        if (call !== undefined && (call === null || typeof call !== "object")) {
          return yield* new LoneDynoConfigError({ reason: "InvalidOption", message: "options must be an object" })
        }
        const dynos = call?.dynos === undefined ? resolved.dynos : yield* LoneDynoConfig.validateDynos(call.dynos)
        const keyBase =
          call?.keyBase === undefined ? resolved.keyBase : yield* LoneDynoConfig.validateKeyBase(call.keyBase)
        return { dynos, keyBase, standbyInterval: resolved.standbyInterval }
      })

    const exclusive = <A, E, R>(
      body: (signal: Signal) => Effect.Effect<A, E, R>,
      options: ExclusiveOptions = {}
    ): Effect.Effect<Option.Option<A> | ExclusiveHandle, E | LoneDynoError, R | Scope.Scope> =>
      Effect.gen(function* () {
        if (typeof body !== "function") {
          return yield* new LoneDynoConfigError({
            reason: "InvalidOption",
            message: "exclusive needs a function from the signal to an Effect as its body"
          })
        }
        const call = yield* callOptions(options)
        const processType =
          options.processType === undefined
            ? resolved.processType
            : yield* LoneDynoConfig.validateProcessType(options.processType)
        if (options.background !== undefined && typeof options.background !== "boolean") {
          return yield* new LoneDynoConfigError({
            reason: "InvalidOption",
            message: "background must be true or false"
          })
        }
        const wait =
          options.wait === undefined
            ? Option.none()
            : Option.some(yield* LoneDynoConfig.validateDuration("wait", options.wait))
        const foreground = options.background === false
        if (Option.isSome(wait) && !foreground) {
          return yield* new LoneDynoConfigError({
            reason: "InvalidOption",
            message: "wait applies to foreground blocks only; pass background: false with it"
          })
        }
        if (!LoneDynoConfig.matchesProcessType(dyno, processType)) {
          const name = JSON.stringify(Option.getOrElse(dyno, () => ""))
          const reason = `DYNO ${name} does not match processType ${String(processType)}`
          yield* Effect.logDebug("Process type does not match; not taking part").pipe(
            Effect.annotateLogs("processType", String(processType))
          )
          return foreground ? Option.none() : yield* internal.skipped(call, reason)
        }
        if (foreground) {
          return yield* internal.foreground(
            session,
            call,
            body,
            wait,
            Duration.sum(resolved.connectTimeout, resolved.heartbeatTimeout)
          )
        }
        return yield* internal.background(session, call, body)
      }).pipe(
        Effect.annotateLogs({ keyBase: options.keyBase ?? resolved.keyBase, dyno: name }),
        Effect.withSpan("LoneDyno.exclusive", { attributes: { keyBase: options.keyBase ?? resolved.keyBase } })
      )

    const signal = (payload: string, options: SignalOptions = {}) =>
      Effect.gen(function* () {
        const text = yield* validatePayload(payload)
        const { dynos, keyBase } = yield* callOptions(options)
        const slots =
          options.slot === undefined
            ? Array.from({ length: dynos }, (_, slot) => slot)
            : [yield* validateSlot(options.slot, dynos)]
        return yield* outbox.send(keyBase, slots, text)
      }).pipe(Effect.withSpan("LoneDyno.signal"))

    const holders = (options: Pick<SignalOptions, "keyBase" | "dynos"> = {}) =>
      Effect.gen(function* () {
        const { dynos, keyBase } = yield* callOptions(options)
        const slots = Array.from({ length: dynos }, (_, slot) => slot)
        const rows = yield* sql
          .unsafe<{
            slot: number
            pid: number | null
            application_name: string | null
            backend_start: Date | null
            client_addr: string | null
          }>(
            "SELECT s.slot, l.pid, a.application_name, a.backend_start, host(a.client_addr) AS client_addr " +
              "FROM unnest($1::int4[], $2::int4[]) AS s(slot, k) " +
              "LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' " +
              "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) " +
              "AND l.classid = $3::int4::oid AND l.objid = s.k::oid " +
              "LEFT JOIN pg_stat_activity a ON a.pid = l.pid ORDER BY s.slot",
            [slots, slots.map((slot) => slotKey(keyBase, slot)[1]), slotKeySpace]
          )
          .pipe(Effect.mapError(sqlFailure("Reading the holders")), withDeadline("Reading the holders"))
        return rows.map(
          (row): SlotHolder => ({
            slot: Number(row.slot),
            held: row.pid !== null,
            pid: row.pid ?? undefined,
            applicationName: row.application_name ?? undefined,
            since: row.backend_start ?? undefined,
            clientAddress: row.client_addr ?? undefined
          })
        )
      }).pipe(Effect.withSpan("LoneDyno.holders"))

    return LoneDyno.of({
      options: resolved,
      exclusive: exclusive as LoneDynoService["exclusive"],
      signal,
      holders
    })
  })

/**
 * The service, from options. Requires the app's `PgClient` from `@effect/sql-pg`: signals and `holders`
 * use its pool, and the lock session is opened with its settings unless `url` is given.
 *
 * @example
 * ```ts
 * import { LoneDyno } from "the-lone-dyno"
 * import { PgClient } from "@effect/sql-pg"
 * import { Layer, Redacted } from "effect"
 *
 * const Postgres = PgClient.layer({ url: Redacted.make(process.env.DATABASE_URL!) })
 * const Live = LoneDyno.layer({ keyBase: "reticulate splines" }).pipe(Layer.provide(Postgres))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: LoneDynoConfig.LoneDynoOptions = {}
): Layer.Layer<LoneDyno, LoneDynoConfigError | ConfigError.ConfigError, PgClient.PgClient> =>
  Layer.scoped(LoneDyno, make(options))

/**
 * The service, with options read through `Config`: by default every option from the environment (see
 * `LoneDynoConfig.fromEnv` for the variable names), or a `Config` per option, as `PgClient.layerConfig` takes.
 *
 * @example
 * ```ts
 * import { LoneDyno } from "the-lone-dyno"
 * import { Config } from "effect"
 *
 * const FromEnv = LoneDyno.layerConfig()
 * const Custom = LoneDyno.layerConfig({ keyBase: Config.string("SCHEDULER_LOCK"), dynos: Config.succeed(1) })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config.Wrap<LoneDynoConfig.LoneDynoOptions> = LoneDynoConfig.fromEnv
): Layer.Layer<LoneDyno, LoneDynoConfigError | ConfigError.ConfigError, PgClient.PgClient> =>
  Layer.scoped(LoneDyno, Effect.flatMap(Config.unwrap(config), make))

/**
 * Runs `body` on at most `dynos` processes: whoever holds one of the slots runs it.
 *
 * In the background (default) it returns at once with a handle; a fiber supervised by the caller's `Scope`
 * stands by until it holds a slot, then runs the body. A body that ends keeps the slot until the scope
 * closes; a body that fails is logged, releases the slot and stands by again after a backoff; a lost
 * connection interrupts the body at once and the fiber stands by again. Closing the scope interrupts the
 * body first, then unlocks.
 *
 * With `background: false` it tries once (or for up to `wait`), runs the body in the caller's fiber while
 * holding the slot, releases it after, and returns `Option.some` of the result, or `Option.none()` when no
 * slot was free or this process does not take part.
 *
 * @example
 * ```ts
 * import { LoneDyno } from "the-lone-dyno"
 * import { Effect, Schedule } from "effect"
 *
 * const program = LoneDyno.exclusive(
 *   () => Effect.log("bump-ba-da-bump").pipe(Effect.repeat(Schedule.spaced("1 second"))),
 *   { dynos: 1, keyBase: "reticulate splines" }
 * )
 * ```
 *
 * @since 0.1.0
 * @category operations
 */
export const exclusive: {
  <A, E, R>(
    body: (signal: Signal) => Effect.Effect<A, E, R>,
    options: ExclusiveOptions & { readonly background: false }
  ): Effect.Effect<Option.Option<A>, E | LoneDynoError, R | LoneDyno>
  <A, E, R>(
    body: (signal: Signal) => Effect.Effect<A, E, R>,
    options?: ExclusiveOptions & { readonly background?: true | undefined }
  ): Effect.Effect<ExclusiveHandle, LoneDynoConfigError, R | LoneDyno | Scope.Scope>
} = (<A, E, R>(body: (signal: Signal) => Effect.Effect<A, E, R>, options?: ExclusiveOptions) =>
  Effect.flatMap(LoneDyno, (service) =>
    service.exclusive(body, options as ExclusiveOptions & { readonly background?: true })
  )) as typeof exclusive

/**
 * Sends `payload` to the holders of the slots of a key base (every slot, or only `slot`), and returns how
 * many of those slots had a holder when it was sent. Each holder receives each payload exactly once.
 *
 * Any string under 8000 bytes in UTF-8 is delivered as sent, the empty string included; a larger one fails
 * with `PayloadTooLarge` before anything is sent. The payload is passed as data, never as SQL.
 *
 * Note: PostgreSQL cannot carry a NUL character or an unpaired surrogate; such payloads fail with
 * `InvalidPayload`, also before anything is sent.
 *
 * Note: the statement runs on the app's `PgClient` pool, whose own timeouts apply; it carries no deadline of
 * its own, because a timer per signal halved burst throughput. Add `Effect.timeout` where one is needed.
 *
 * @since 0.1.0
 * @category operations
 */
export const signal = (payload: string, options?: SignalOptions): Effect.Effect<number, LoneDynoError, LoneDyno> =>
  Effect.flatMap(LoneDyno, (service) => service.signal(payload, options))

/**
 * Every slot of a key base, free or held, and who holds it.
 *
 * @since 0.1.0
 * @category operations
 */
export const holders = (
  options?: Pick<SignalOptions, "keyBase" | "dynos">
): Effect.Effect<ReadonlyArray<SlotHolder>, LoneDynoError, LoneDyno> =>
  Effect.flatMap(LoneDyno, (service) => service.holders(options))

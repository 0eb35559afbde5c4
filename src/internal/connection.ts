/**
 * One physical connection of the lock session: how it is opened and configured, how a statement gets its
 * deadline, and how a connection is marked lost or torn down.
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"
import pg from "pg"
import { type ResolvedOptions, serverKeepalive } from "../LoneDynoConfig.js"
import { LoneDynoSessionError } from "../LoneDynoError.js"
import type { Holding } from "./session.js"

/** One physical connection of the session; a new one after every loss. */
export interface Connection {
  readonly generation: number
  readonly client: pg.Client
  readonly backendPid: number
  /** Completed, with the reason, the moment the connection can no longer be trusted. */
  readonly lost: Deferred.Deferred<string>
  readonly holdings: Set<Holding>
  /** Slot channels LISTENed on this connection, with their key bases. */
  readonly listening: Map<string, string>
  /** Deadline of every statement. */
  readonly deadline: Duration.Duration
}

export interface ConnectionSettings {
  readonly config: pg.ClientConfig
  readonly applicationName: string
}

const failure = (reason: LoneDynoSessionError["reason"], message: string, cause?: unknown) =>
  new LoneDynoSessionError(cause === undefined ? { reason, message } : { reason, message, cause })

const describe = (error: unknown) => (error instanceof Error ? error.message : String(error))

export const quoteIdent = (name: string) => `"${name.replaceAll('"', '""')}"`
export const int4 = (n: number) => `(${n | 0})::int4`

/** Session settings applied on connect, so the server frees a vanished client's slots within seconds. */
const sessionSettings = [
  ["tcp_keepalives_idle", String(serverKeepalive.idle)],
  ["tcp_keepalives_interval", String(serverKeepalive.interval)],
  ["tcp_keepalives_count", String(serverKeepalive.count)],
  ["tcp_user_timeout", String((serverKeepalive.idle + serverKeepalive.interval * serverKeepalive.count) * 1000)],
  ["client_connection_check_interval", "2000"],
  ["idle_session_timeout", "0"],
  ["idle_in_transaction_session_timeout", "0"],
  ["statement_timeout", "0"],
  ["lock_timeout", "0"]
] as const

// Reconnect delays: 100 ms doubling, jittered by +-20%, capped at 5 s: 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5, 5, ... s
export const reconnectDelay = (attempt: number) =>
  Duration.millis(Math.round(Math.min(5000, 100 * 2 ** Math.min(attempt, 16)) * (0.8 + Math.random() * 0.4)))

/** Marks a connection lost: every holder racing on `lost` is interrupted at once. */
export const markLost = (connection: Connection, reason: string) =>
  Effect.sync(() => Deferred.unsafeDone(connection.lost, Exit.succeed(reason)))

/**
 * Runs a statement with the connection's deadline; any failure marks the connection lost. The deadline is a
 * timer of its own rather than an interruption, so it also holds inside the uninterruptible acquisition, which
 * must finish to know whether it took a lock.
 */
export const query = (
  connection: Connection,
  text: string,
  values?: ReadonlyArray<unknown>
): Effect.Effect<pg.QueryResult, LoneDynoSessionError> =>
  Effect.async<pg.QueryResult, LoneDynoSessionError>((resume) => {
    let settled = false
    const settle = (effect: Effect.Effect<pg.QueryResult, LoneDynoSessionError>) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resume(effect)
    }
    const deadline = connection.deadline
    const timer = setTimeout(
      () =>
        settle(
          Effect.fail(
            failure("Timeout", `Statement on the lock session missed its ${Duration.format(deadline)} deadline`)
          )
        ),
      Duration.toMillis(deadline)
    )
    connection.client.query(text, values as Array<unknown> | undefined).then(
      (result) => settle(Effect.succeed(result)),
      (cause) =>
        settle(Effect.fail(failure("Query", `Statement on the lock session failed: ${describe(cause)}`, cause)))
    )
  }).pipe(Effect.tapError((error) => markLost(connection, error.message)))

/** Closes a client at once, without waiting for the server. */
export const destroy = (client: pg.Client) => {
  const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream
  client.end().catch(() => undefined)
  stream?.destroy?.()
}

/**
 * Opens and configures a connection, refusing one that goes through a pooler unless allowed. Notifications
 * are handed to `onNotification` as they arrive.
 */
export const open = (
  settings: ConnectionSettings,
  options: ResolvedOptions,
  generation: number,
  onNotification: (channel: string, payload: string) => void
): Effect.Effect<Connection, LoneDynoSessionError> =>
  Effect.gen(function* () {
    const lost = Deferred.unsafeMake<string>(FiberId.none)
    const client = new pg.Client({
      ...settings.config,
      application_name: settings.applicationName,
      keepAlive: true,
      keepAliveInitialDelayMillis: 1000,
      connectionTimeoutMillis: Math.max(1, Duration.toMillis(options.connectTimeout))
    })
    // node-postgres emits 'error' (then 'end') when the server goes away; without a listener the process dies.
    client.on("error", (error) => Deferred.unsafeDone(lost, Exit.succeed(`connection error: ${error.message}`)))
    client.on("end", () => Deferred.unsafeDone(lost, Exit.succeed("connection ended")))
    client.on("notification", (message) => onNotification(message.channel, message.payload ?? ""))
    const teardown = Effect.sync(() => destroy(client))
    yield* Effect.tryPromise({
      try: () => client.connect(),
      catch: (cause) => failure("Connect", `Could not open the lock session: ${describe(cause)}`, cause)
    }).pipe(
      Effect.timeoutFail({
        duration: options.connectTimeout,
        onTimeout: () =>
          failure("Timeout", `Opening the lock session missed its ${Duration.format(options.connectTimeout)} deadline`)
      }),
      Effect.onError(() => teardown)
    )
    const connection: Connection = {
      generation,
      client,
      backendPid: 0,
      lost,
      holdings: new Set(),
      listening: new Map(),
      deadline: options.heartbeatTimeout
    }
    const result = yield* query(
      connection,
      "SELECT pg_backend_pid() AS pid, " +
        "(SELECT count(set_config(n, v, false)) FROM unnest($1::text[], $2::text[]) AS s(n, v)) AS n",
      [sessionSettings.map(([name]) => name), sessionSettings.map(([, value]) => value)]
    ).pipe(Effect.onError(() => teardown))
    const backendPid = Number(result.rows[0]?.pid)
    const viaPooler = (client as unknown as { processID?: number }).processID !== backendPid
    if (viaPooler && !options.allowPooler) {
      destroy(client)
      return yield* Effect.fail(
        failure(
          "Pooler",
          "The lock session goes through a connection pooler (the backend pid differs from the one the server " +
            "announced). A pooler in transaction mode breaks session advisory locks and LISTEN. Give the layer a " +
            "direct URL with the `url` option, or use session pooling and set `allowPooler: true`."
        )
      )
    }
    return { ...connection, backendPid }
  })

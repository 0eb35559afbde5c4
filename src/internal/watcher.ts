/**
 * The watcher: while a process has standbys, one extra connection waits inside PostgreSQL for a held slot
 * to become free, so standbys learn of a holder's death within a round trip instead of at the next poll.
 *
 * It waits with `pg_advisory_xact_lock_shared` on the slot's key, which the server grants the moment the holder's
 * exclusive lock goes (the holder's process died, its connection was cut, or it released). The watcher then
 * lets go at once and wakes the standbys, which try for every free slot on the lock session. Holders are
 * shared out among the watchers of a fleet with watch tickets (`Keys.watchKey`): a holder's death frees all
 * its slots at once, so with as many standby processes as holding processes every holder has a watcher; a
 * watcher that finds no free ticket watches a random holder.
 *
 * A wait lasts at most `lockTimeout`, so an idle watcher costs the server four statements per 30 seconds.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import pg from "pg"
import { slotKey, slotKeySpace, watchKey, watchKeySpace } from "../Keys.js"
import { serverKeepalive } from "../LoneDynoConfig.js"
import { destroy } from "./connection.js"

export interface Standbys {
  /** Key bases that have standbys now, with their slot counts. */
  readonly current: () => ReadonlyArray<{ readonly keyBase: string; readonly dynos: number }>
  readonly heldSlots: (keyBase: string) => ReadonlySet<number>
  readonly wake: (keyBase: string) => void
}

const lockTimeout = Duration.seconds(30)

// Retry delays after a failed watcher connection: 200 ms doubling, capped at 5 s.
const retryDelay = (attempt: number) => Duration.millis(Math.min(5000, 200 * 2 ** Math.min(attempt, 10)))

// Every round trip has a deadline; the blocking wait's is the server's lock_timeout plus a margin.
const query = (
  client: pg.Client,
  text: string,
  values?: Array<unknown>,
  deadline: Duration.DurationInput = "5 seconds"
) =>
  Effect.tryPromise({ try: () => client.query(text, values), catch: (cause) => cause }).pipe(
    Effect.timeoutFail({ duration: deadline, onTimeout: () => new Error("watcher statement missed its deadline") })
  )

/**
 * Runs while there are standbys and returns when there are none. Interruption closes its connection.
 */
export const run = (config: pg.ClientConfig, applicationName: string, standbys: Standbys): Effect.Effect<void> =>
  Effect.gen(function* () {
    let attempt = 0
    let turn = 0
    while (standbys.current().length > 0) {
      const client = new pg.Client({ ...config, application_name: applicationName, keepAlive: true })
      client.on("error", () => undefined) // a lost watcher only delays wake-ups; the loop reconnects
      const outcome = yield* Effect.gen(function* () {
        yield* Effect.tryPromise({ try: () => client.connect(), catch: (cause) => cause }).pipe(
          Effect.timeout("5 seconds")
        )
        // The lock session's keepalives too, so the server drops a vanished watcher's ticket within seconds.
        const detection = serverKeepalive.idle + serverKeepalive.interval * serverKeepalive.count
        yield* query(
          client,
          "SELECT set_config('lock_timeout', $1, false), " +
            "set_config('client_connection_check_interval', '1000', false), " +
            "set_config('statement_timeout', '0', false), set_config('idle_session_timeout', '0', false), " +
            "set_config('tcp_keepalives_idle', $2, false), set_config('tcp_keepalives_interval', $3, false), " +
            "set_config('tcp_keepalives_count', $4, false), set_config('tcp_user_timeout', $5, false)",
          [
            `${Duration.toMillis(lockTimeout)}`,
            `${serverKeepalive.idle}`,
            `${serverKeepalive.interval}`,
            `${serverKeepalive.count}`,
            `${detection * 1000}`
          ]
        )
        attempt = 0
        while (true) {
          const bases = standbys.current()
          if (bases.length === 0) return
          const { keyBase, dynos } = bases[turn++ % bases.length]!
          const held = standbys.heldSlots(keyBase)
          const candidates = Array.from({ length: dynos }, (_, slot) => slot).filter((slot) => !held.has(slot))
          if (candidates.length === 0) {
            yield* Effect.sleep("100 millis")
            continue
          }
          // Who holds what: a free slot is waited on at once (granted at once: the standbys take it); otherwise
          // watch a holder no other watcher has a ticket for, since its death frees every slot it has.
          const holders = yield* query(
            client,
            "SELECT s.slot, l.pid FROM unnest($1::int4[], $2::int4[]) AS s(slot, k) " +
              "LEFT JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.mode = 'ExclusiveLock' " +
              "AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) " +
              "AND l.classid = $3::int4::oid AND l.objid = s.k::oid",
            [candidates, candidates.map((slot) => slotKey(keyBase, slot)[1]), slotKeySpace]
          )
          const slotOf = new Map<number, number>()
          let free: number | undefined
          for (const row of holders.rows as Array<{ slot: number; pid: number | null }>) {
            if (row.pid === null) free ??= Number(row.slot)
            else if (!slotOf.has(row.pid)) slotOf.set(row.pid, Number(row.slot))
          }
          const pids = [...slotOf.keys()]
          const ticket =
            free !== undefined || pids.length === 0
              ? undefined
              : yield* query(
                  client,
                  "SELECT p FROM unnest($1::int4[], $2::int4[]) AS t(p, k) " +
                    "WHERE pg_try_advisory_lock($3::int4, t.k) LIMIT 1",
                  [pids, pids.map((pid) => watchKey(keyBase, pid)[1]), watchKeySpace]
                ).pipe(Effect.map((result) => (result.rows[0] === undefined ? undefined : Number(result.rows[0].p))))
          const watched = ticket ?? pids[Math.floor(Math.random() * pids.length)]
          const slot = free ?? (watched === undefined ? candidates[0]! : slotOf.get(watched)!)
          const started = Date.now()
          // Transaction-level: the shared lock ends with the statement, so a watcher cut off at the moment it is
          // granted can never keep a freed slot from the standbys.
          const granted = yield* query(
            client,
            "SELECT pg_advisory_xact_lock_shared($1::int4, $2::int4)",
            [slotKeySpace, slotKey(keyBase, slot)[1]],
            Duration.sum(lockTimeout, Duration.seconds(5))
          ).pipe(
            Effect.as(true),
            Effect.catchIf(
              (error) => (error as { code?: string }).code === "55P03",
              () => Effect.succeed(false)
            )
          )
          if (granted) standbys.wake(keyBase)
          if (ticket !== undefined) {
            yield* query(client, "SELECT pg_advisory_unlock($1::int4, $2::int4)", [
              watchKeySpace,
              watchKey(keyBase, ticket)[1]
            ])
          }
          // Granted at once means the slot was already free: let the standbys take it before waiting again.
          if (granted && Date.now() - started < 20) yield* Effect.sleep("100 millis")
        }
      }).pipe(Effect.ensuring(Effect.sync(() => destroy(client))), Effect.either)
      if (outcome._tag === "Left") {
        yield* Effect.logDebug("Watcher connection failed; retrying").pipe(
          Effect.annotateLogs("error", outcome.left instanceof Error ? outcome.left.message : String(outcome.left))
        )
        yield* Effect.sleep(retryDelay(attempt++))
      }
    }
  })

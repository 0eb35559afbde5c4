/**
 * The lock session: one dedicated PostgreSQL connection per layer that carries every piece of session state
 * (advisory locks and LISTENs). It watches itself, and on any loss interrupts every holder first, then
 * reconnects with backoff.
 */
import * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import type pg from "pg"
import { type LockKey, releaseChannel, slotChannel, slotKey, slotKeySpace } from "../Keys.js"
import type { ResolvedOptions } from "../LoneDynoConfig.js"
import type { LoneDynoSessionError } from "../LoneDynoError.js"
import type { Connection, ConnectionSettings } from "./connection.js"
import * as Conn from "./connection.js"
import * as Watcher from "./watcher.js"

export type { Connection, ConnectionSettings }

/** A slot held by this process. */
export interface Holding {
  readonly keyBase: string
  readonly slot: number
  readonly key: LockKey
  readonly channel: string
  readonly connection: Connection
  readonly payloads: Queue.Queue<string>
  readonly since: Date
}

export type SessionState =
  | { readonly _tag: "Idle" }
  | { readonly _tag: "Connecting"; readonly attempt: number }
  | { readonly _tag: "Connected"; readonly connection: Connection }
  | { readonly _tag: "Failed"; readonly error: LoneDynoSessionError }

export interface Session {
  /** Waits for a live connection; fails only when the session cannot work at all (a pooler). */
  readonly connection: Effect.Effect<Connection, LoneDynoSessionError>
  /** Tries every free slot of the key base in one statement; on success the slot's channel is listened to. */
  readonly tryAcquire: (
    keyBase: string,
    dynos: number,
    poll?: boolean
  ) => Effect.Effect<Option.Option<Holding>, LoneDynoSessionError>
  /** Stops listening, unlocks, and tells standbys; a failure here marks the connection lost. */
  readonly release: (holding: Holding) => Effect.Effect<void>
  /**
   * Registers a standby: returns a queue that gets an item whenever a slot of the key base may have become
   * free (a graceful release anywhere, or the watcher seeing a holder go).
   */
  readonly wakeups: (keyBase: string, dynos: number) => Effect.Effect<Queue.Dequeue<void>, never, Scope.Scope>
}

/**
 * Up to this many free slots, an attempt listens on every candidate's channel before it locks; above it, it
 * listens on the won slot's channel after locking, which leaves a window of one round trip in which a signal
 * counted for the new holder does not reach it.
 */
const maxListenFirst = 64

/** Builds a session. Nothing connects until the first call that needs the connection. */
export const make = (
  options: ResolvedOptions,
  settings: ConnectionSettings
): Effect.Effect<Session, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const state = yield* SubscriptionRef.make<SessionState>({ _tag: "Idle" })
    const lockPermit = yield* Effect.makeSemaphore(1)
    const holdings = new Map<string, Holding>()
    const routes = new Map<string, (payload: string) => void>()
    const wakers = new Map<string, Set<Queue.Queue<void>>>()
    const standbyDynos = new Map<Queue.Queue<void>, number>()
    // A routine poll skips the statement when another standby of this process found every slot of the key
    // base taken less than half a poll interval ago: many standbys then cost about one statement per interval.
    const lastMiss = new Map<string, number>()
    const pollGap = Duration.toMillis(options.standbyInterval) / 2
    let watching = false
    let current: Connection | undefined
    let generation = 0
    let started = false

    const holdingId = (keyBase: string, slot: number) => `${slot}\u0000${keyBase}`

    const run = Conn.query
    const markLost = Conn.markLost

    const wake = (keyBase: string) => {
      lastMiss.delete(keyBase)
      for (const queue of wakers.get(keyBase) ?? []) Queue.unsafeOffer(queue, undefined)
    }

    const listenReleases = (connection: Connection, keyBases: Iterable<string>) => {
      const statements = [...keyBases].map((keyBase) => `LISTEN ${Conn.quoteIdent(releaseChannel(keyBase))}`)
      return statements.length === 0 ? Effect.void : Effect.asVoid(run(connection, statements.join("; ")))
    }

    const connect = (attempt: number): Effect.Effect<Connection, LoneDynoSessionError> =>
      Effect.gen(function* () {
        const live = yield* Conn.open(settings, options, ++generation, (channel, payload) =>
          routes.get(channel)?.(payload)
        )
        yield* listenReleases(live, wakers.keys()).pipe(
          Effect.onError(() => Effect.sync(() => Conn.destroy(live.client)))
        )
        if (attempt > 0) yield* Effect.logInfo("Lock session recovered").pipe(Effect.annotateLogs("attempt", attempt))
        else yield* Effect.logDebug("Lock session connected").pipe(Effect.annotateLogs("backendPid", live.backendPid))
        return live
      })

    const heartbeat = (connection: Connection) =>
      Effect.gen(function* () {
        const expected = [...connection.holdings]
        const result = yield* run(
          connection,
          "SELECT classid::int8::text AS a, objid::int8::text AS b FROM pg_locks " +
            "WHERE pid = pg_backend_pid() AND locktype = 'advisory' AND granted AND objsubid = 2 " +
            "AND classid = $1::int4::oid",
          [slotKeySpace]
        )
        const actual = new Set(result.rows.map((row) => `${row.a}:${row.b}`))
        const missing = expected.filter(
          (holding) =>
            connection.holdings.has(holding) && !actual.has(`${holding.key[0] >>> 0}:${holding.key[1] >>> 0}`)
        )
        if (missing.length > 0) {
          yield* markLost(
            connection,
            `slots no longer held: ${missing.map((h) => `${h.keyBase}#${h.slot}`).join(", ")}`
          )
        }
      }).pipe(
        Effect.catchAll(() => Effect.void),
        Effect.repeat(Schedule.spaced(options.heartbeatInterval)),
        Effect.zipRight(Effect.never)
      )

    // Holders race their bodies against `lost`, so they are interrupted the moment it completes. Wait for them
    // to finish before the socket is closed, so that a holder always stops before the server frees its slot.
    const awaitHoldersGone = (connection: Connection) =>
      Effect.gen(function* () {
        const deadline = Date.now() + 10_000
        while (connection.holdings.size > 0 && Date.now() < deadline) yield* Effect.sleep("5 millis")
      })

    const loop = Effect.gen(function* () {
      let attempt = 0
      while (true) {
        yield* SubscriptionRef.set(state, { _tag: "Connecting", attempt })
        const exit = yield* Effect.exit(connect(attempt))
        if (Exit.isFailure(exit)) {
          const error = Cause.failureOption(exit.cause)
          if (Option.isSome(error) && error.value.reason === "Pooler") {
            yield* Effect.logError("Lock session refused", error.value.message)
            yield* SubscriptionRef.set(state, { _tag: "Failed", error: error.value })
            return
          }
          const delay = Conn.reconnectDelay(attempt)
          yield* Effect.logWarning("Could not connect the lock session; retrying").pipe(
            Effect.annotateLogs({
              attempt,
              retryIn: Duration.format(delay),
              error: Option.match(error, { onNone: () => Cause.pretty(exit.cause), onSome: (e) => e.message })
            })
          )
          attempt++
          yield* Effect.sleep(delay)
          continue
        }
        const connection = exit.value
        current = connection
        attempt = 0
        yield* SubscriptionRef.set(state, { _tag: "Connected", connection })
        const reason = yield* Effect.raceFirst(Deferred.await(connection.lost), heartbeat(connection))
        current = undefined
        yield* SubscriptionRef.set(state, { _tag: "Connecting", attempt: 0 })
        const lostSlots = [...connection.holdings].map((h) => `${h.keyBase}#${h.slot}`)
        if (lostSlots.length > 0) {
          yield* Effect.logError("Lock session lost; holders interrupted").pipe(
            Effect.annotateLogs({ reason, slots: lostSlots.join(", ") })
          )
        } else {
          yield* Effect.logWarning("Lock session lost; reconnecting").pipe(Effect.annotateLogs({ reason }))
        }
        yield* awaitHoldersGone(connection)
        Conn.destroy(connection.client)
        attempt = 1
        yield* Effect.sleep(Conn.reconnectDelay(0))
      }
    })

    const ensureStarted = Effect.suspend(() => {
      if (started) return Effect.void
      started = true
      // Forked from inside acquisitions, which are uninterruptible: the fiber itself must stay interruptible.
      return Effect.asVoid(Effect.forkIn(Effect.interruptible(loop), scope))
    })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function* () {
        const connection = current
        current = undefined
        if (connection === undefined) return
        // Blocks still running in a scope that outlives this layer stop before their slots are unlocked.
        if (connection.holdings.size > 0) {
          yield* markLost(connection, "the layer's scope closed")
          yield* awaitHoldersGone(connection)
        }
        yield* Effect.promise(() =>
          connection.client.query("SELECT pg_advisory_unlock_all()").then(
            () => connection.client.end(),
            () => undefined
          )
        ).pipe(Effect.timeout("2 seconds"), Effect.ignore)
        Conn.destroy(connection.client)
      })
    )

    const connection: Effect.Effect<Connection, LoneDynoSessionError> = Effect.zipRight(
      ensureStarted,
      state.changes.pipe(
        Stream.filterMap(
          (s): Option.Option<Exit.Exit<Connection, LoneDynoSessionError>> =>
            s._tag === "Connected"
              ? Option.some(Exit.succeed(s.connection))
              : s._tag === "Failed"
                ? Option.some(Exit.fail(s.error))
                : Option.none()
        ),
        Stream.runHead,
        Effect.flatMap((exit) => (Option.isSome(exit) ? exit.value : Effect.never))
      )
    )

    const tryAcquire = (keyBase: string, dynos: number, poll = false) =>
      Effect.flatMap(connection, (live) => attempt(live, keyBase, dynos, poll))

    const attempt = (live: Connection, keyBase: string, dynos: number, poll: boolean) =>
      lockPermit
        .withPermits(1)(
          Effect.gen(function* () {
            if (yield* Deferred.isDone(live.lost)) return Option.none<Holding>()
            if (poll && Date.now() - (lastMiss.get(keyBase) ?? 0) < pollGap) return Option.none<Holding>()
            const candidates: Array<number> = []
            for (let slot = 0; slot < dynos; slot++) if (!holdings.has(holdingId(keyBase, slot))) candidates.push(slot)
            if (candidates.length === 0) return Option.none<Holding>()
            // Listen before locking, so a signal counted for this holder can never slip past it: the LISTENs
            // commit before the lock is tried, and what arrives meanwhile is kept for the slot won. While the
            // key base has standbys here the LISTENs stay, so later tries are a single statement; payloads for
            // channels this process does not hold are dropped.
            const listenFirst = candidates.length <= maxListenFirst
            const pending = new Map<string, Array<string>>()
            if (listenFirst) {
              for (const slot of candidates) {
                const channel = slotChannel(keyBase, slot)
                const buffer: Array<string> = []
                pending.set(channel, buffer)
                routes.set(channel, (payload) => buffer.push(payload))
              }
            }
            const dropPending = Effect.sync(() => {
              for (const channel of pending.keys()) routes.delete(channel)
            })
            const tryLock =
              `SELECT s FROM unnest(ARRAY[${candidates.join(",")}]::int4[], ` +
              `ARRAY[${candidates.map((slot) => slotKey(keyBase, slot)[1]).join(",")}]::int4[]) AS t(s, k) ` +
              `WHERE pg_try_advisory_lock(${Conn.int4(slotKeySpace)}, t.k) LIMIT 1`
            const fresh = [...pending.keys()].filter((channel) => !live.listening.has(channel))
            const listens = fresh.map((channel) => `LISTEN ${Conn.quoteIdent(channel)}`)
            const results = yield* run(
              live,
              listens.length > 0 ? `BEGIN; ${listens.join("; ")}; COMMIT; ${tryLock}` : tryLock
            ).pipe(Effect.tapError(() => dropPending))
            for (const channel of fresh) live.listening.set(channel, keyBase)
            const last = Array.isArray(results) ? (results as Array<pg.QueryResult>).at(-1) : results
            const row = last?.rows[0]
            const won = row === undefined ? undefined : slotChannel(keyBase, Number(row.s))
            const losers = [...pending.keys()].filter((channel) => channel !== won)
            for (const channel of losers) routes.delete(channel)
            if (losers.length > 0 && !wakers.has(keyBase)) {
              for (const channel of losers) live.listening.delete(channel)
              yield* run(live, losers.map((channel) => `UNLISTEN ${Conn.quoteIdent(channel)}`).join("; ")).pipe(
                Effect.tapError(() => dropPending)
              )
            }
            if (row === undefined) {
              lastMiss.set(keyBase, Date.now())
              return Option.none<Holding>()
            }
            const slot = Number(row.s)
            const holding: Holding = {
              keyBase,
              slot,
              key: slotKey(keyBase, slot),
              channel: slotChannel(keyBase, slot),
              connection: live,
              payloads: yield* Queue.unbounded<string>(),
              since: new Date()
            }
            holdings.set(holdingId(keyBase, slot), holding)
            live.holdings.add(holding)
            for (const payload of pending.get(holding.channel) ?? []) Queue.unsafeOffer(holding.payloads, payload)
            routes.set(holding.channel, (payload) => Queue.unsafeOffer(holding.payloads, payload))
            if (!listenFirst) {
              yield* run(live, `LISTEN ${Conn.quoteIdent(holding.channel)}`).pipe(
                Effect.tapError(() => forget(holding))
              )
              live.listening.set(holding.channel, keyBase)
            }
            return Option.some(holding)
          })
        )
        .pipe(Effect.uninterruptible)

    const forget = (holding: Holding) =>
      Effect.gen(function* () {
        const id = holdingId(holding.keyBase, holding.slot)
        if (holdings.get(id) === holding) holdings.delete(id)
        holding.connection.holdings.delete(holding)
        if (routes.get(holding.channel) !== undefined) routes.delete(holding.channel)
        yield* Queue.shutdown(holding.payloads)
      })

    const release = (holding: Holding) =>
      lockPermit
        .withPermits(1)(
          Effect.gen(function* () {
            const live = holding.connection
            const stillOpen = !(yield* Deferred.isDone(live.lost))
            if (stillOpen) {
              const [a, b] = holding.key
              yield* run(
                live,
                `UNLISTEN ${Conn.quoteIdent(holding.channel)}; ` +
                  `SELECT pg_advisory_unlock(${Conn.int4(a)}, ${Conn.int4(b)}); ` +
                  `SELECT pg_notify('${releaseChannel(holding.keyBase)}', '${holding.slot}')`
              ).pipe(
                Effect.tapError((error) =>
                  Effect.logWarning("Could not release a slot cleanly; the session will reconnect").pipe(
                    Effect.annotateLogs({ keyBase: holding.keyBase, slot: holding.slot, error: error.message })
                  )
                ),
                Effect.ignore
              )
            }
            live.listening.delete(holding.channel)
            yield* forget(holding)
            wake(holding.keyBase)
          })
        )
        .pipe(Effect.uninterruptible)

    const standbys: Watcher.Standbys = {
      current: () =>
        [...wakers].map(([keyBase, queues]) => ({
          keyBase,
          dynos: Math.max(...[...queues].map((queue) => standbyDynos.get(queue) ?? 1))
        })),
      heldSlots: (keyBase) => heldSlots(keyBase),
      wake: (keyBase) => wake(keyBase)
    }

    // One watcher fiber while there are standbys; it returns when the last one goes.
    const ensureWatcher: Effect.Effect<void> = Effect.suspend(() => {
      if (watching) return Effect.void
      watching = true
      const watcher: Effect.Effect<void> = Effect.suspend(() =>
        Watcher.run(settings.config, watcherName, standbys)
      ).pipe(
        Effect.zipRight(
          Effect.suspend(() => {
            watching = false
            return wakers.size > 0 ? ensureWatcher : Effect.void
          })
        )
      )
      return Effect.asVoid(Effect.forkIn(Effect.interruptible(watcher), scope))
    })
    const watcherName = Buffer.from(`${settings.applicationName} (watch)`, "utf8").subarray(0, 63).toString("utf8")

    const wakeups = (keyBase: string, dynos: number) =>
      Effect.acquireRelease(
        Effect.gen(function* () {
          const queue = yield* Queue.sliding<void>(1)
          let set = wakers.get(keyBase)
          if (set === undefined) {
            set = new Set()
            wakers.set(keyBase, set)
            routes.set(releaseChannel(keyBase), () => wake(keyBase))
            if (current !== undefined) yield* listenReleases(current, [keyBase]).pipe(Effect.ignore)
          }
          set.add(queue)
          standbyDynos.set(queue, dynos)
          yield* ensureWatcher
          return queue
        }),
        (queue) =>
          Effect.gen(function* () {
            const set = wakers.get(keyBase)
            set?.delete(queue)
            standbyDynos.delete(queue)
            if (set !== undefined && set.size === 0) {
              wakers.delete(keyBase)
              routes.delete(releaseChannel(keyBase))
              const live = current
              if (live !== undefined) {
                // Under the permit, so no attempt is between its LISTEN and its result.
                const unlisten = Effect.suspend(() => {
                  const idle = [...live.listening]
                    .filter(([channel, base]) => base === keyBase && !routes.has(channel))
                    .map(([channel]) => channel)
                  for (const channel of idle) live.listening.delete(channel)
                  const channels = [releaseChannel(keyBase), ...idle]
                  return run(live, channels.map((channel) => `UNLISTEN ${Conn.quoteIdent(channel)}`).join("; "))
                })
                yield* lockPermit.withPermits(1)(unlisten).pipe(Effect.ignore)
              }
            }
            yield* Queue.shutdown(queue)
          })
      )

    const heldSlots = (keyBase: string) => {
      const slots = new Set<number>()
      for (const holding of holdings.values()) if (holding.keyBase === keyBase) slots.add(holding.slot)
      return slots
    }

    return { connection, tryAcquire, release, wakeups } satisfies Session
  })

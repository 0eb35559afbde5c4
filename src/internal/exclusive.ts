/**
 * The two ways of running a block: in a supervised background fiber that stands by until it holds a slot,
 * or once in the caller's fiber.
 */
import type * as Cause from "effect/Cause"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import * as SubscriptionRef from "effect/SubscriptionRef"
import { LoneDynoSessionError } from "../LoneDynoError.js"
import { type Signal, watchQueue } from "../Signal.js"
import type { Holding, Session } from "./session.js"

export type ExclusiveState =
  | { readonly _tag: "Skipped"; readonly reason: string }
  | { readonly _tag: "Standby" }
  | { readonly _tag: "Holding"; readonly slot: number; readonly since: Date }
  | { readonly _tag: "Backoff"; readonly until: Date }
  | { readonly _tag: "Failed"; readonly error: LoneDynoSessionError }
  | { readonly _tag: "Stopped" }

export interface ExclusiveHandle {
  readonly keyBase: string
  readonly dynos: number
  readonly state: Effect.Effect<ExclusiveState>
  readonly changes: Stream.Stream<ExclusiveState>
  readonly awaitSlot: Effect.Effect<number, LoneDynoSessionError>
  readonly stop: Effect.Effect<void>
}

export interface Call {
  readonly keyBase: string
  readonly dynos: number
  readonly standbyInterval: Duration.Duration
}

const signalOf = (holding: Holding): Signal => ({
  keyBase: holding.keyBase,
  slot: holding.slot,
  watch: (options) => watchQueue(holding.payloads, options)
})

// Jittered by +-20%, so a fleet started together does not poll in step.
const jitter = (duration: Duration.Duration) =>
  Duration.millis(Math.round(Duration.toMillis(duration) * (0.8 + Math.random() * 0.4)))

// After a failed body: 1 s doubling, jittered by +-20%, capped at 60 s: 1, 2, 4, 8, 16, 32, 60, 60, ... s
const failureDelay = (failures: number) =>
  jitter(Duration.millis(Math.min(60_000, 1000 * 2 ** Math.min(failures - 1, 16))))

/**
 * A standby's wait between tries: until a wake-up or the poll interval. Right after a wake-up a freed slot is
 * contended (and watchers briefly hold it shared), so the next tries come quickly: 5, 10, 20 and 40 ms.
 * Returns how many quick tries remain.
 */
const nap = (wakeups: Queue.Dequeue<void>, call: Call, quick: number, cap?: Duration.Duration) =>
  Effect.gen(function* () {
    const delay = quick > 0 ? Duration.millis(5 * 2 ** (4 - quick)) : jitter(call.standbyInterval)
    const woke = yield* Queue.take(wakeups).pipe(Effect.timeoutOption(cap ? Duration.min(delay, cap) : delay))
    return woke._tag === "Some" ? 4 : Math.max(0, quick - 1)
  })

const tryForSlot = (session: Session, call: Call, poll: boolean) =>
  session
    .tryAcquire(call.keyBase, call.dynos, poll)
    .pipe(
      Effect.catchAll((error) =>
        error.reason === "Pooler"
          ? Effect.fail(error)
          : Effect.logWarning("Could not try for a slot; retrying").pipe(
              Effect.annotateLogs("error", error.message),
              Effect.as(Option.none<Holding>())
            )
      )
    )

type Outcome =
  | { readonly _tag: "Lost"; readonly reason: string }
  | { readonly _tag: "Failed"; readonly cause: Cause.Cause<unknown> }

/**
 * Runs `effect` until it ends or `lost` completes, whichever comes first. On a loss, or when the caller is
 * interrupted, the effect is interrupted and its finalizers are awaited before this returns, so the slot is
 * never released while the body still runs.
 */
const untilLost = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  lost: Deferred.Deferred<string>
): Effect.Effect<Either.Either<Exit.Exit<A, E>, string>, never, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(restore(effect))
      const first = yield* restore(
        Effect.raceFirst(
          Fiber.await(fiber).pipe(Effect.map((exit) => Either.right(exit))),
          Deferred.await(lost).pipe(Effect.map((reason) => Either.left(reason)))
        )
      ).pipe(Effect.onInterrupt(() => Fiber.interrupt(fiber)))
      if (Either.isLeft(first)) yield* Fiber.interrupt(fiber)
      return first
    })
  )

/**
 * Runs the body while holding; says why holding ended. A body that completes keeps the slot until the
 * scope closes; the connection's loss interrupts the body at once.
 */
const hold = <A, E, R>(
  holding: Holding,
  body: (signal: Signal) => Effect.Effect<A, E, R>
): Effect.Effect<Outcome, never, R> =>
  untilLost(
    body(signalOf(holding)).pipe(
      Effect.exit,
      Effect.flatMap(
        (exit): Effect.Effect<Outcome> =>
          Exit.isSuccess(exit)
            ? Effect.zipRight(
                Effect.logDebug("Block completed; the slot stays held until the scope closes"),
                Effect.never
              )
            : Effect.succeed({ _tag: "Failed", cause: exit.cause })
      )
    ),
    holding.connection.lost
  ).pipe(
    Effect.map(
      (first): Outcome =>
        Either.isLeft(first)
          ? { _tag: "Lost", reason: first.left }
          : Exit.isSuccess(first.right)
            ? first.right.value
            : { _tag: "Failed", cause: first.right.cause }
    )
  )

/** The release half of an attempt: gives back the slot, if one was taken. */
const releaseIfHeld = (session: Session) => (holding: Option.Option<Holding>) =>
  Option.isSome(holding)
    ? Effect.zipRight(session.release(holding.value), Effect.logInfo("Released slot")).pipe(
        Effect.annotateLogs("slot", holding.value.slot)
      )
    : Effect.void

/**
 * One turn: take a slot if one is free and, if so, run the body on it. The acquisition is uninterruptible
 * and the release guaranteed, so a slot is never taken without being given back.
 */
const turn = <A, E, R>(
  session: Session,
  call: Call,
  body: (signal: Signal) => Effect.Effect<A, E, R>,
  onHolding: (holding: Holding) => Effect.Effect<void>,
  poll: boolean
) =>
  Effect.acquireUseRelease(
    tryForSlot(session, call, poll),
    (holding) =>
      Option.match(holding, {
        onNone: () => Effect.succeed(Option.none<Outcome>()),
        onSome: (held) =>
          Effect.zipRight(Effect.zipRight(onHolding(held), Effect.logInfo("Acquired slot")), hold(held, body)).pipe(
            Effect.map(Option.some),
            Effect.annotateLogs("slot", held.slot)
          )
      }),
    releaseIfHeld(session)
  )

export const background = <A, E, R>(
  session: Session,
  call: Call,
  body: (signal: Signal) => Effect.Effect<A, E, R>
): Effect.Effect<ExclusiveHandle, never, R | Scope.Scope> =>
  Effect.gen(function* () {
    const state = yield* SubscriptionRef.make<ExclusiveState>({ _tag: "Standby" })
    // Registered as a standby (wake-ups, the release channel, the watcher) only while standing by.
    let standby: { readonly scope: Scope.CloseableScope; readonly wakeups: Queue.Dequeue<void> } | undefined
    const enterStandby = Effect.gen(function* () {
      if (standby !== undefined) return standby.wakeups
      const scope = yield* Scope.make()
      const wakeups = yield* session.wakeups(call.keyBase, call.dynos).pipe(Scope.extend(scope))
      standby = { scope, wakeups }
      return wakeups
    })
    const leaveStandby = Effect.suspend(() => {
      const current = standby
      standby = undefined
      return current === undefined ? Effect.void : Scope.close(current.scope, Exit.void)
    })
    const loop = Effect.gen(function* () {
      let failures = 0
      let announced = false
      let quick = 0
      while (true) {
        // A plain poll (no wake-up, no quick retry) may be answered from the process's last miss.
        const poll = standby !== undefined && quick === 0
        const outcome = yield* turn(
          session,
          call,
          body,
          (held) =>
            Effect.zipRight(
              leaveStandby,
              SubscriptionRef.set(state, { _tag: "Holding", slot: held.slot, since: held.since })
            ),
          poll
        )
        if (Option.isNone(outcome)) {
          const wakeups = yield* enterStandby
          if (!announced) {
            announced = true
            yield* Effect.logInfo("Standing by")
          }
          quick = yield* nap(wakeups, call, quick)
          continue
        }
        announced = false
        yield* SubscriptionRef.set(state, { _tag: "Standby" })
        if (outcome.value._tag === "Lost") {
          failures = 0
          continue
        }
        failures++
        const delay = failureDelay(failures)
        yield* Effect.logError("Block failed; slot released", outcome.value.cause).pipe(
          Effect.annotateLogs({ retryIn: Duration.format(delay) })
        )
        yield* SubscriptionRef.set(state, { _tag: "Backoff", until: new Date(Date.now() + Duration.toMillis(delay)) })
        yield* Effect.sleep(delay)
        yield* SubscriptionRef.set(state, { _tag: "Standby" })
      }
    }).pipe(
      Effect.ensuring(leaveStandby),
      Effect.catchAll((error) =>
        Effect.zipRight(
          Effect.logError("Cannot compete for a slot", error.message),
          SubscriptionRef.set(state, { _tag: "Failed", error })
        )
      ),
      Effect.onInterrupt(() => SubscriptionRef.set(state, { _tag: "Stopped" }))
    )
    const fiber = yield* Effect.forkScoped(loop)
    const awaitSlot = state.changes.pipe(
      Stream.filterMap(
        (s): Option.Option<Effect.Effect<number, LoneDynoSessionError>> =>
          s._tag === "Holding"
            ? Option.some(Effect.succeed(s.slot))
            : s._tag === "Failed"
              ? Option.some(Effect.fail(s.error))
              : s._tag === "Stopped"
                ? Option.some(
                    Effect.fail(
                      new LoneDynoSessionError({ reason: "Closed", message: "The exclusive block was stopped" })
                    )
                  )
                : Option.none()
      ),
      Stream.runHead,
      Effect.flatMap((next) => (Option.isSome(next) ? next.value : Effect.never))
    )
    return {
      keyBase: call.keyBase,
      dynos: call.dynos,
      state: SubscriptionRef.get(state),
      changes: state.changes,
      awaitSlot,
      stop: Fiber.interrupt(fiber).pipe(Effect.asVoid)
    } satisfies ExclusiveHandle
  })

export const skipped = (call: Call, reason: string): Effect.Effect<ExclusiveHandle> =>
  Effect.sync(() => {
    const state: ExclusiveState = { _tag: "Skipped", reason }
    return {
      keyBase: call.keyBase,
      dynos: call.dynos,
      state: Effect.succeed(state),
      changes: Stream.make(state),
      awaitSlot: Effect.fail(
        new LoneDynoSessionError({ reason: "Closed", message: `This process does not take part: ${reason}` })
      ),
      stop: Effect.void
    } satisfies ExclusiveHandle
  })

export const foreground = <A, E, R>(
  session: Session,
  call: Call,
  body: (signal: Signal) => Effect.Effect<A, E, R>,
  wait: Option.Option<Duration.Duration>,
  connectDeadline: Duration.Duration
): Effect.Effect<Option.Option<A>, E | LoneDynoSessionError, R> =>
  Effect.gen(function* () {
    yield* session.connection.pipe(
      Effect.timeoutFail({
        duration: connectDeadline,
        onTimeout: () =>
          new LoneDynoSessionError({
            reason: "Connect",
            message: `Could not reach PostgreSQL within ${Duration.format(connectDeadline)}; see the logs for why`
          })
      })
    )
    const deadline = Date.now() + Option.match(wait, { onNone: () => 0, onSome: Duration.toMillis })
    let wakeups: Queue.Dequeue<void> | undefined
    let quick = 0
    while (true) {
      const ran = yield* Effect.acquireUseRelease(
        session.tryAcquire(call.keyBase, call.dynos),
        (holding) => {
          if (Option.isNone(holding)) return Effect.succeed(Option.none<A>())
          const held = holding.value
          return Effect.zipRight(
            Effect.logInfo("Acquired slot"),
            untilLost(body(signalOf(held)), held.connection.lost)
          ).pipe(
            Effect.flatMap(
              (first): Effect.Effect<A, E | LoneDynoSessionError> =>
                Either.isLeft(first)
                  ? Effect.fail(
                      new LoneDynoSessionError({
                        reason: "LockLost",
                        message: `The slot was lost while the block ran, so it was interrupted: ${first.left}`
                      })
                    )
                  : first.right
            ),
            Effect.map(Option.some),
            Effect.annotateLogs("slot", held.slot)
          )
        },
        releaseIfHeld(session)
      )
      if (Option.isSome(ran)) return ran
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        yield* Effect.logDebug("No free slot; the block did not run")
        return Option.none<A>()
      }
      wakeups ??= yield* session.wakeups(call.keyBase, call.dynos)
      quick = yield* nap(wakeups, call, quick, Duration.millis(remaining))
    }
  }).pipe(Effect.scoped)

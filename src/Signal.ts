/**
 * Signals: payloads an operator sends to the processes that hold the slots of a key base, over
 * `LISTEN/NOTIFY`.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { validateDuration } from "./LoneDynoConfig.js"
import { LoneDynoConfigError } from "./LoneDynoError.js"

/**
 * The largest payload PostgreSQL delivers, in UTF-8 bytes (it must be shorter than 8000).
 *
 * @since 0.1.0
 * @category limits
 */
export const maxPayloadBytes = 7999

/**
 * How `watch` hands payloads over. Without options each payload is pushed as it arrives. With `sleep`
 * and `ttl`, as in the Ruby gem: wake every `sleep`, wait up to `ttl` for a payload if none is queued,
 * then hand over every payload that arrived, in order. Defaults when either is given: `sleep` 60 seconds,
 * `ttl` 100 millis. `sleep` must be longer than zero; `ttl` may be zero (do not wait).
 *
 * @since 0.1.0
 * @category models
 */
export interface WatchOptions {
  readonly sleep?: Duration.DurationInput | undefined
  readonly ttl?: Duration.DurationInput | undefined
}

/**
 * What the body of an `exclusive` block receives: which slot it holds, and the signals sent to it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Signal {
  readonly keyBase: string
  /** The slot this process holds, from 0 to `dynos - 1`. */
  readonly slot: number
  /**
   * The payloads sent to this slot while it is held, each exactly once and in order. Payloads that arrive
   * before `watch` is called are queued, not lost.
   *
   * Note: the payloads of a slot are one queue; two streams watched at once share them out rather than each
   * getting every payload.
   */
  readonly watch: (options?: WatchOptions) => Stream.Stream<string, LoneDynoConfigError>
}

/**
 * Checks a payload before anything is sent: a string of at most {@link maxPayloadBytes} bytes in UTF-8 (the
 * empty string included), without NUL characters or lone surrogates, which could not arrive as sent. Fails with
 * `InvalidPayload` or `PayloadTooLarge`.
 *
 * @since 0.1.0
 * @category validation
 */
export const validatePayload = (payload: unknown): Effect.Effect<string, LoneDynoConfigError> => {
  if (typeof payload !== "string") {
    return Effect.fail(
      new LoneDynoConfigError({ reason: "InvalidPayload", message: `payload must be a string, got ${typeof payload}` })
    )
  }
  // PostgreSQL text cannot hold NUL, and a lone surrogate has no UTF-8 form (it would arrive as U+FFFD), so
  // neither could arrive as sent.
  if (payload.includes("\u0000") || /\p{Surrogate}/u.test(payload)) {
    return Effect.fail(
      new LoneDynoConfigError({
        reason: "InvalidPayload",
        message: "payload must be valid Unicode text without NUL characters; encode binary data, such as in base64"
      })
    )
  }
  const bytes = Buffer.byteLength(payload, "utf8")
  return bytes > maxPayloadBytes
    ? Effect.fail(
        new LoneDynoConfigError({
          reason: "PayloadTooLarge",
          message:
            `payload is ${bytes} bytes in UTF-8; PostgreSQL delivers at most ${maxPayloadBytes}. ` +
            "Send a key to data stored elsewhere instead"
        })
      )
    : Effect.succeed(payload)
}

const collect = (queue: Queue.Dequeue<string>, ttl: Duration.Duration) =>
  Effect.gen(function* () {
    const ready = yield* Queue.takeAll(queue)
    if (ready.length > 0 || Duration.toMillis(ttl) === 0) return ready
    const first = yield* Queue.take(queue).pipe(Effect.timeoutOption(ttl))
    if (first._tag === "None") return []
    return [first.value, ...(yield* Queue.takeAll(queue))]
  })

// `Duration.decodeUnknown` turns a negative number into zero; refuse it instead of waiting for no time at all.
const watchDuration = (name: string, input: Duration.DurationInput) =>
  (typeof input === "number" || typeof input === "bigint") && input < 0
    ? Effect.fail(
        new LoneDynoConfigError({
          reason: "InvalidDuration",
          message: `${name} must be a finite, non-negative duration, got ${String(input)}`
        })
      )
    : validateDuration(name, input)

/**
 * The stream behind `Signal.watch`, over the queue of one held slot.
 *
 * @since 0.1.0
 * @category constructors
 */
export const watchQueue = (
  queue: Queue.Dequeue<string>,
  options: WatchOptions = {}
): Stream.Stream<string, LoneDynoConfigError> => {
  if (options.sleep === undefined && options.ttl === undefined) return Stream.fromQueue(queue)
  return Stream.unwrap(
    Effect.gen(function* () {
      const sleep = yield* watchDuration("sleep", options.sleep ?? "60 seconds")
      const ttl = yield* watchDuration("ttl", options.ttl ?? "100 millis")
      if (Duration.toMillis(sleep) === 0) {
        return yield* new LoneDynoConfigError({
          reason: "InvalidDuration",
          message: "sleep must be longer than zero; to have payloads pushed as they arrive, give neither sleep nor ttl"
        })
      }
      return Stream.fromSchedule(Schedule.spaced(sleep)).pipe(
        Stream.mapEffect(() => collect(queue, ttl)),
        Stream.flattenIterables
      )
    })
  )
}

/**
 * The outbox: signals sent at the same time travel together. One fiber sends whatever queued up while its
 * previous statement was on its way in one statement, so concurrent senders cost one round trip and one
 * statement per batch instead of one each.
 *
 * PostgreSQL folds identical notifications (same channel, same payload) within one transaction, so two
 * signals with the same key base and payload never share a statement.
 */
import * as Chunk from "effect/Chunk"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import { slotChannel, slotKey, slotKeySpace } from "../Keys.js"
import { LoneDynoSessionError } from "../LoneDynoError.js"

interface Pending {
  readonly keyBase: string
  readonly slots: ReadonlyArray<number>
  readonly payload: string
  readonly done: Deferred.Deferred<number, LoneDynoSessionError>
}

export type Execute = (
  text: string,
  params: ReadonlyArray<unknown>
) => Effect.Effect<ReadonlyArray<{ readonly req: number; readonly holders: number }>, LoneDynoSessionError>

const maxBatch = 256

// A slot has a holder when a shared lock on its key cannot be had; the transaction-level shared lock goes when
// the statement commits, together with the notifications. Notifications are sent in the order of the rows.
const statement =
  "WITH t AS (SELECT * FROM unnest($2::int4[], $3::int4[], $4::text[], $5::text[]) WITH ORDINALITY " +
  "AS t(req, k, ch, payload, ord)), " +
  "held AS (SELECT req, (count(*) FILTER (WHERE NOT pg_try_advisory_xact_lock_shared($1::int4, k)))::int " +
  "AS holders FROM t GROUP BY req), " +
  "sent AS (SELECT count(pg_notify(o.ch, o.payload)) AS n FROM (SELECT ch, payload FROM t ORDER BY ord) AS o) " +
  "SELECT held.req, held.holders, sent.n FROM held, sent"

// The same for a single signal, without the grouping.
const single =
  "SELECT 0 AS req, (SELECT count(*) FROM unnest($2::int4[]) AS k " +
  "WHERE NOT pg_try_advisory_xact_lock_shared($1::int4, k))::int AS holders, " +
  "(SELECT count(pg_notify(c, $4)) FROM unnest($3::text[]) AS c) AS n"

const send = (execute: Execute, round: ReadonlyArray<Pending>) =>
  Effect.gen(function* () {
    const req: Array<number> = []
    const keys: Array<number> = []
    const channels: Array<string> = []
    const payloads: Array<string> = []
    round.forEach((pending, index) => {
      for (const slot of pending.slots) {
        req.push(index)
        keys.push(slotKey(pending.keyBase, slot)[1])
        channels.push(slotChannel(pending.keyBase, slot))
        payloads.push(pending.payload)
      }
    })
    const rows = yield* round.length === 1
      ? execute(single, [slotKeySpace, keys, channels, round[0]!.payload])
      : execute(statement, [slotKeySpace, req, keys, channels, payloads])
    const holders = new Map(rows.map((row) => [Number(row.req), Number(row.holders)]))
    for (const [index, pending] of round.entries()) yield* Deferred.succeed(pending.done, holders.get(index) ?? 0)
  }).pipe(
    Effect.catchAll((error) =>
      Effect.forEach(round, (pending) => Deferred.fail(pending.done, error), { discard: true })
    )
  )

/** Splits a batch into rounds in which no key base and payload appear twice. */
const rounds = (batch: ReadonlyArray<Pending>) => {
  const result: Array<Array<Pending>> = []
  for (const pending of batch) {
    const id = `${pending.keyBase}\u0000${pending.payload}`
    const round = result.find((candidate) => !candidate.some((p) => `${p.keyBase}\u0000${p.payload}` === id))
    if (round === undefined) result.push([pending])
    else round.push(pending)
  }
  return result
}

export interface Outbox {
  /** Sends one payload to the given slots of a key base; returns how many of them had a holder. */
  readonly send: (
    keyBase: string,
    slots: ReadonlyArray<number>,
    payload: string
  ) => Effect.Effect<number, LoneDynoSessionError>
}

export const make = (execute: Execute): Effect.Effect<Outbox, never, Scope.Scope> =>
  Effect.gen(function* () {
    const queue = yield* Queue.unbounded<Pending>()
    const closed = new LoneDynoSessionError({
      reason: "Closed",
      message: "The layer was closed before the signal went"
    })
    yield* Effect.gen(function* () {
      while (true) {
        const first = yield* Queue.take(queue)
        const rest = Chunk.toReadonlyArray(yield* Queue.takeUpTo(queue, maxBatch - 1))
        for (const round of rounds([first, ...rest])) yield* send(execute, round)
      }
    }).pipe(
      Effect.ensuring(
        Effect.flatMap(Queue.takeAll(queue), (left) =>
          Effect.forEach(left, (pending) => Deferred.fail(pending.done, closed), { discard: true })
        )
      ),
      Effect.forkScoped
    )
    return {
      send: (keyBase, slots, payload) =>
        Effect.gen(function* () {
          const done = yield* Deferred.make<number, LoneDynoSessionError>()
          yield* Queue.offer(queue, { keyBase, slots, payload, done })
          return yield* Deferred.await(done)
        })
    }
  })

/**
 * The two families of failure: input the caller can fix, and trouble with the database.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * Invalid input: an option, a slot or a payload the library cannot accept. Nothing has been started or sent
 * when this error is raised, and nothing already running is affected.
 *
 * @since 0.1.0
 * @category errors
 */
export class LoneDynoConfigError extends Data.TaggedError("LoneDynoConfigError")<{
  readonly reason:
    | "InvalidDynos"
    | "InvalidKeyBase"
    | "InvalidProcessType"
    | "InvalidSlot"
    | "InvalidPayload"
    | "PayloadTooLarge"
    | "InvalidDuration"
    | "InvalidOption"
    | "MissingConnection"
  readonly message: string
}> {}

/**
 * Trouble with PostgreSQL: a connection that cannot be made or was lost, a statement that failed or missed
 * its deadline, a lock that was taken away, or a connection pooler that breaks session locks.
 *
 * @since 0.1.0
 * @category errors
 */
export class LoneDynoSessionError extends Data.TaggedError("LoneDynoSessionError")<{
  readonly reason: "Connect" | "Query" | "Timeout" | "LockLost" | "Pooler" | "Closed"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Any error the library raises.
 *
 * @since 0.1.0
 * @category errors
 */
export type LoneDynoError = LoneDynoConfigError | LoneDynoSessionError

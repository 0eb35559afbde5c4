/**
 * the-lone-dyno: run code on at most N processes of a fleet, and signal them, with PostgreSQL advisory
 * locks and LISTEN/NOTIFY.
 *
 * @since 0.1.0
 */

/**
 * @since 0.1.0
 */
export * as Keys from "./Keys.js"

/**
 * @since 0.1.0
 */
export * as LoneDyno from "./LoneDyno.js"

/**
 * @since 0.1.0
 */
export * as LoneDynoConfig from "./LoneDynoConfig.js"

/**
 * @since 0.1.0
 */
export * as LoneDynoError from "./LoneDynoError.js"

/**
 * @since 0.1.0
 */
export * as Signal from "./Signal.js"

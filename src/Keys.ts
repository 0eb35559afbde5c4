/**
 * How slots map to advisory lock keys, and key bases to `LISTEN/NOTIFY` channels.
 *
 * Slot `k` of key base `B` is the session advisory lock `(-2147483648, crc32("B_k"))`, the crc read as a
 * signed 32-bit integer. This is the key scheme of the Ruby `pg_lock` gem, which the Ruby `the_lone_dyno`
 * uses, so Ruby and Node processes sharing a database exclude each other.
 *
 * Channels are `tld_` followed by the first 40 hex digits of the SHA-256 of the key base in UTF-8, then `_`
 * and the slot number: at most 52 bytes, lower-case, and distinct for distinct key bases. From `psql`:
 *
 * ```sql
 * SELECT pg_notify('tld_' || left(encode(sha256(convert_to('reticulate splines', 'UTF8')), 'hex'), 40) || '_0',
 *                  'hi ho silver!');
 * ```
 *
 * @since 0.1.0
 */
import { createHash } from "node:crypto"

/**
 * The first half of every slot key, as used by the `pg_lock` gem.
 *
 * @since 0.1.0
 * @category keys
 */
export const slotKeySpace = -2147483648

/**
 * The first half of the keys that standbys use to share out which holder each one watches. Distinct from
 * {@link slotKeySpace}, so it never collides with a slot.
 *
 * @since 0.1.0
 * @category keys
 */
export const watchKeySpace = -2147483647

const crcTable = (() => {
  const table = new Int32Array(256)
  for (let n = 0; n < 256; n++) {
    let c = n
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    table[n] = c
  }
  return table
})()

/**
 * CRC-32 (IEEE, as zlib's `crc32`) of the UTF-8 bytes of a string, as a signed 32-bit integer.
 *
 * @since 0.1.0
 * @category keys
 */
export const crc32 = (text: string): number => {
  let crc = -1
  for (const byte of Buffer.from(text, "utf8")) crc = crcTable[(crc ^ byte) & 0xff]! ^ (crc >>> 8)
  return (crc ^ -1) | 0
}

/**
 * A two-int4 advisory lock key.
 *
 * @since 0.1.0
 * @category models
 */
export type LockKey = readonly [number, number]

/**
 * The advisory lock key of one slot.
 *
 * @example
 * ```ts
 * import { Keys } from "the-lone-dyno"
 * Keys.slotKey("the_lone_dyno_hi_ho_silver", 0) // [-2147483648, crc32("the_lone_dyno_hi_ho_silver_0")]
 * ```
 *
 * @since 0.1.0
 * @category keys
 */
export const slotKey = (keyBase: string, slot: number): LockKey => [slotKeySpace, crc32(`${keyBase}_${slot}`)]

/**
 * The key a standby's watcher takes to say that it watches the holder with server pid `pid`: a holder's death
 * frees all its slots at once, so watchers are shared out over holders rather than slots.
 *
 * @since 0.1.0
 * @category keys
 */
export const watchKey = (keyBase: string, pid: number): LockKey => [watchKeySpace, crc32(`${keyBase}#${pid}`)]

/**
 * The channel prefix of a key base: `tld_` and 40 hex digits of its SHA-256.
 *
 * @since 0.1.0
 * @category channels
 */
export const channelPrefix = (keyBase: string): string =>
  `tld_${createHash("sha256").update(keyBase, "utf8").digest("hex").slice(0, 40)}`

/**
 * The channel the holder of one slot listens on.
 *
 * @since 0.1.0
 * @category channels
 */
export const slotChannel = (keyBase: string, slot: number): string => `${channelPrefix(keyBase)}_${slot}`

/**
 * The channel on which a holder announces a graceful release, so standbys retry at once.
 *
 * @since 0.1.0
 * @category channels
 */
export const releaseChannel = (keyBase: string): string => `${channelPrefix(keyBase)}_release`

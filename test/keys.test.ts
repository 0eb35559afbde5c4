import { createHash } from "node:crypto"
import { crc32 as zlibCrc32 } from "node:zlib"
import { describe, expect, it } from "@effect/vitest"
import { Keys } from "../src/index.js"

const samples = [
  "",
  "a",
  "reticulate splines",
  "the_lone_dyno_hi_ho_silver_0",
  "The quick brown fox jumps over the lazy dog",
  'it\'s "quoted"; DROP TABLE x; --',
  "réticuler les splines ✨ 日本語",
  "\u0000\n\t\r",
  "x".repeat(500),
  "🦄".repeat(100)
]

const weirdKeyBases = [
  "reticulate splines",
  "Reticulate Splines",
  "RETICULATE SPLINES",
  "reticulate  splines",
  " reticulate splines",
  'it\'s "quoted"',
  "back\\slash",
  "semi;colon -- comment",
  "réticuler les splines ✨",
  "日本語のキー",
  "\u{1F984}",
  "line\nbreak",
  "x".repeat(500),
  "é".repeat(500),
  "x".repeat(499)
]

const utf8Bytes = (text: string) => Buffer.byteLength(text, "utf8")

describe("Keys.crc32", () => {
  it.each(samples)("matches zlib.crc32 as a signed int32 for %j", (text) => {
    expect(Keys.crc32(text)).toBe(zlibCrc32(Buffer.from(text, "utf8")) | 0)
    expect(Number.isInteger(Keys.crc32(text))).toBe(true)
    expect(Keys.crc32(text)).toBeGreaterThanOrEqual(-2147483648)
    expect(Keys.crc32(text)).toBeLessThanOrEqual(2147483647)
  })

  it("gives the known CRC-32 check value", () => {
    // The standard check value of CRC-32/ISO-HDLC over "123456789" is 0xcbf43926.
    expect(Keys.crc32("123456789")).toBe(0xcbf43926 | 0)
  })
})

describe("Keys.slotKey", () => {
  it.each(weirdKeyBases.flatMap((keyBase) => [0, 1, 7, 99].map((slot) => [keyBase, slot] as const)))(
    "is [-2147483648, crc32(keyBase_slot)] for %j slot %i",
    (keyBase, slot) => {
      expect(Keys.slotKey(keyBase, slot)).toEqual([-2147483648, zlibCrc32(`${keyBase}_${slot}`) | 0])
      expect(Keys.slotKey(keyBase, slot)).toEqual([Keys.slotKeySpace, Keys.crc32(`${keyBase}_${slot}`)])
    }
  )

  it("matches the pg_lock gem example", () => {
    expect(Keys.slotKey("the_lone_dyno_hi_ho_silver", 0)).toEqual([
      -2147483648,
      zlibCrc32("the_lone_dyno_hi_ho_silver_0") | 0
    ])
  })

  it("keys watch tickets by holder pid, in a key space of their own", () => {
    expect(Keys.watchKey("a", 4242)).toEqual([Keys.watchKeySpace, zlibCrc32("a#4242") | 0])
    expect(Keys.watchKey("a", 0)[0]).not.toBe(Keys.slotKey("a", 0)[0])
  })
})

describe("Keys channels", () => {
  it.each(weirdKeyBases)("are deterministic, lower-case, at most 63 bytes for %j", (keyBase) => {
    for (const slot of [0, 9, 99, 9999]) {
      const channel = Keys.slotChannel(keyBase, slot)
      expect(channel).toBe(Keys.slotChannel(keyBase, slot))
      expect(utf8Bytes(channel)).toBeLessThanOrEqual(63)
      expect(channel).toMatch(/^tld_[0-9a-f]{40}_[0-9]+$/)
    }
    expect(utf8Bytes(Keys.releaseChannel(keyBase))).toBeLessThanOrEqual(63)
    expect(Keys.releaseChannel(keyBase)).toMatch(/^tld_[0-9a-f]{40}_release$/)
  })

  it.each(weirdKeyBases)("follow the documented SQL formula for %j", (keyBase) => {
    const hex = createHash("sha256").update(Buffer.from(keyBase, "utf8")).digest("hex")
    expect(Keys.channelPrefix(keyBase)).toBe(`tld_${hex.slice(0, 40)}`)
    expect(Keys.slotChannel(keyBase, 2)).toBe(`tld_${hex.slice(0, 40)}_2`)
  })

  it("are distinct per key base and per slot", () => {
    const channels = new Set<string>()
    for (const keyBase of weirdKeyBases) {
      for (const slot of [0, 1, 2, 10, 11]) channels.add(Keys.slotChannel(keyBase, slot))
      channels.add(Keys.releaseChannel(keyBase))
    }
    expect(channels.size).toBe(weirdKeyBases.length * 6)
  })

  it("keep key bases that look like a key base plus a slot apart", () => {
    expect(Keys.slotChannel("a_1", 0)).not.toBe(Keys.slotChannel("a", 10))
    expect(Keys.slotChannel("a", 1)).not.toBe(Keys.slotChannel("a_", 1))
  })
})

import { afterAll, afterEach, beforeAll, describe, expect, it } from "@effect/vitest"
import { Effect, ManagedRuntime } from "effect"
import { LoneDyno } from "../src/index.js"
import { type Dyno, has, killAll, sleep, spawnDyno, waitFor } from "./support/fleet.js"
import { databaseUrl, loneDyno, uniqueKeyBase } from "./support/layer.js"

let runtime: ManagedRuntime.ManagedRuntime<LoneDyno.LoneDyno, unknown>
beforeAll(() => {
  runtime = ManagedRuntime.make(loneDyno())
})
afterAll(async () => {
  await runtime.dispose()
})

const run = <A, E>(effect: Effect.Effect<A, E, LoneDyno.LoneDyno>) => runtime.runPromise(effect)
const signal = (payload: string, options: LoneDyno.SignalOptions) => run(LoneDyno.signal(payload, options))

const spawned: Array<Dyno> = []
const fleet = (n: number, env: Record<string, string | undefined>, label = "d") =>
  Array.from({ length: n }, (_, i) => {
    const dyno = spawnDyno({ DATABASE_URL: databaseUrl(), STANDBY_INTERVAL: "200 millis", ...env }, `${label}${i}`)
    spawned.push(dyno)
    return dyno
  })

afterEach(async () => {
  await killAll(spawned.splice(0))
})

const received = (dyno: Dyno) => dyno.events.filter((e) => e.event === "signal").map((e) => e.payload)
const slotOf = (dyno: Dyno) => dyno.events.find((e) => e.event === "start")?.slot

/** Waits until `dyno` has received `payload` (the last of a series), then returns all it received. */
const receivedUpTo = async (dyno: Dyno, payload: string) => {
  await waitFor(`${dyno.name} to receive ${JSON.stringify(payload)}`, () => received(dyno).includes(payload), 15_000)
  return received(dyno)
}

const marker = () => `marker ${Math.random()}`

describe("signals across processes", () => {
  it("a holder in a child process gets 5 back-to-back signals exactly once each, in order", async () => {
    const keyBase = uniqueKeyBase("fleet five")
    const [dyno] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" })
    await waitFor("the child to hold the slot", () => dyno!.running())
    const sent = ["one", "two", "three", "four", "five"]
    for (const payload of sent) expect(await signal(payload, { keyBase })).toBe(1)
    const end = marker()
    expect(await signal(end, { keyBase })).toBe(1)
    expect(await receivedUpTo(dyno!, end)).toEqual([...sent, end])
  })

  it("payloads arrive byte for byte in a child process", async () => {
    const keyBase = uniqueKeyBase("fleet bytes")
    const [dyno] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" })
    await waitFor("the child to hold the slot", () => dyno!.running())
    const sent = [
      "",
      "x'; CREATE TABLE injected(); --",
      `it's "quoted"\nsecond line\r\n\ttab`,
      "réticuler les splines ✨ 日本語 🦄👨‍👩‍👧",
      `${"€".repeat(2666)}a`
    ]
    for (const payload of sent) expect(await signal(payload, { keyBase })).toBe(1)
    const end = marker()
    await signal(end, { keyBase })
    expect(await receivedUpTo(dyno!, end)).toEqual([...sent, end])
  })

  it("a payload of 8000 bytes fails before anything is sent; the child holder receives nothing", async () => {
    const keyBase = uniqueKeyBase("fleet too large")
    const [dyno] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" })
    await waitFor("the child to hold the slot", () => dyno!.running())
    const error = await run(Effect.flip(LoneDyno.signal("a".repeat(8000), { keyBase })))
    expect(error._tag).toBe("LoneDynoConfigError")
    expect(error.reason).toBe("PayloadTooLarge")
    const end = marker()
    await signal(end, { keyBase })
    expect(await receivedUpTo(dyno!, end)).toEqual([end])
  })

  it("dynos 3: each of the 3 holders gets each signal once; standbys and other key bases get nothing", async () => {
    const keyBase = uniqueKeyBase("fleet three")
    const other = uniqueKeyBase("fleet other")
    const dynos = fleet(5, { KEY_BASE: keyBase, DYNOS: "3", WATCH: "push" })
    const [bystander] = fleet(1, { KEY_BASE: other, DYNOS: "3", WATCH: "push" }, "other")
    await waitFor("3 processes to hold slots", () => dynos.filter((d) => d.running()).length === 3)
    await waitFor("every process to report ready", () => [...dynos, bystander!].every((d) => has(d, "ready")))
    await waitFor("the bystander to hold a slot of its own key base", () => bystander!.running())
    const holders = dynos.filter((d) => d.running())
    const standbys = dynos.filter((d) => !d.running())
    expect(holders.map(slotOf).sort()).toEqual([0, 1, 2])
    expect(standbys).toHaveLength(2)

    const sent = ["alpha", "", "gamma", "delta\nwith newline", "epsilon ✨"]
    for (const payload of sent) expect(await signal(payload, { keyBase, dynos: 3 })).toBe(3)
    const end = marker()
    expect(await signal(end, { keyBase, dynos: 3 })).toBe(3)
    for (const dyno of holders) expect(await receivedUpTo(dyno, end)).toEqual([...sent, end])

    // The markers have reached every holder; give anything misrouted a moment to show up.
    await sleep(300)
    for (const dyno of standbys) {
      expect(dyno.running()).toBe(false)
      expect(received(dyno)).toEqual([])
    }
    expect(received(bystander!)).toEqual([])
    expect(dynos.filter((d) => d.running())).toHaveLength(3)
  })

  it("a slot-targeted signal reaches only that slot's holder and returns 1, or 0 for an unheld slot", async () => {
    const keyBase = uniqueKeyBase("fleet slot")
    const dynos = fleet(2, { KEY_BASE: keyBase, DYNOS: "3", WATCH: "push" })
    await waitFor("2 processes to hold slots", () => dynos.every((d) => d.running()))
    const bySlot = new Map(dynos.map((d) => [slotOf(d), d]))
    const held = [...bySlot.keys()].sort()
    const free = [0, 1, 2].find((slot) => !held.includes(slot))!

    for (const slot of held) expect(await signal(`for slot ${slot}`, { keyBase, dynos: 3, slot })).toBe(1)
    expect(await signal(`for slot ${free}`, { keyBase, dynos: 3, slot: free })).toBe(0)
    const invalid = await run(Effect.flip(LoneDyno.signal("bad", { keyBase, dynos: 3, slot: 3 })))
    expect(invalid._tag).toBe("LoneDynoConfigError")
    expect(invalid.reason).toBe("InvalidSlot")
    for (const slot of held) {
      const end = marker()
      expect(await signal(end, { keyBase, dynos: 3, slot })).toBe(1)
      expect(await receivedUpTo(bySlot.get(slot)!, end)).toEqual([`for slot ${slot}`, end])
    }
  })

  it("a child watching with sleep and ttl gets back-to-back signals once each, in order", async () => {
    const keyBase = uniqueKeyBase("fleet paced")
    const [dyno] = fleet(1, { KEY_BASE: keyBase, WATCH: "300 millis,50 millis" })
    await waitFor("the child to hold the slot", () => dyno!.running())
    const sent = ["one", "two", "three", "four", "five"]
    for (const payload of sent) expect(await signal(payload, { keyBase })).toBe(1)
    await sleep(400)
    const more = ["six", "seven"]
    for (const payload of more) expect(await signal(payload, { keyBase })).toBe(1)
    const end = marker()
    await signal(end, { keyBase })
    expect(await receivedUpTo(dyno!, end)).toEqual([...sent, ...more, end])
  })

  it("after the holder is killed, the standby that takes over gets the signals", async () => {
    const keyBase = uniqueKeyBase("fleet takeover")
    const [first] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" }, "first")
    await waitFor("the first process to hold the slot", () => first!.running())
    const [second] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" }, "second")
    await waitFor("the second process to stand by", () => has(second!, "ready"))
    const before = marker()
    expect(await signal(before, { keyBase })).toBe(1)
    expect(await receivedUpTo(first!, before)).toEqual([before])

    first!.kill("SIGKILL")
    await waitFor("the standby to take over", () => second!.running(), 15_000)
    const after = marker()
    expect(await signal(after, { keyBase })).toBe(1)
    expect(await receivedUpTo(second!, after)).toEqual([after])
    expect(received(first!)).toEqual([before])
  })

  // The session LISTENs (committed) on every candidate channel before it tries the lock, so no signal
  // counted for a new holder can slip between its lock and its LISTEN.
  it("signals counted as held are delivered, even when sent at the moment of acquisition", async () => {
    for (let round = 0; round < 6; round++) {
      const keyBase = uniqueKeyBase("fleet acquisition")
      const [dyno] = fleet(1, { KEY_BASE: keyBase, WATCH: "push" }, `round${round}`)
      const counted: Array<string> = []
      for (let i = 0; counted.length < 20; i++) {
        const payload = `s${i}`
        if ((await signal(payload, { keyBase })) === 1) counted.push(payload)
      }
      const got = await receivedUpTo(dyno!, counted.at(-1)!)
      expect(counted.filter((payload) => !got.includes(payload))).toEqual([])
      await killAll(spawned.splice(0))
    }
  })
})

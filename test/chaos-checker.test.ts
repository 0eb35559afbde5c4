/**
 * The chaos checker on synthetic logs: it accepts the documented behaviour and flags every kind of violation,
 * so a clean chaos run means something.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  type ChaosLog,
  check,
  defaultPolicy,
  type Fault,
  intervals,
  type LogEvent,
  overlapEpisodes,
  recoveries,
  type SentSignal,
  seededRandom,
  slotConflicts
} from "./support/chaos-checker.js"

const policy = defaultPolicy(2)

const ev = (proc: string, event: LogEvent["event"], t: number, slot?: number, payload?: string): LogEvent => ({
  proc,
  event,
  t,
  slot,
  payload
})

/** a holds slot 0 and b slot 1 from the start; c stands by. */
const base: ReadonlyArray<LogEvent> = [ev("a", "start", 100, 0), ev("b", "start", 120, 1)]

const log = (
  events: ReadonlyArray<LogEvent>,
  faults: ReadonlyArray<Fault> = [],
  signals: ReadonlyArray<SentSignal> = [],
  end = 20_000
): ChaosLog => ({ events: [...base, ...events], faults, signals, end })

describe("intervals", () => {
  it("closes a body at its stop, at the kill, or at the end of the run", () => {
    const built = intervals([...base, ev("a", "stop", 500, 0), ev("b", "killed", 700), ev("c", "start", 710, 1)], 1000)
    expect(built.violations).toEqual([])
    expect(built.intervals.map((i) => [i.proc, i.start, i.stop, i.end])).toEqual([
      ["a", 100, 500, "stop"],
      ["b", 120, 700, "killed"],
      ["c", 710, 1000, "end"]
    ])
  })

  it("flags a second start, a stray stop and anything printed after the kill", () => {
    const built = intervals(
      [
        ev("a", "start", 1, 0),
        ev("a", "start", 2, 0),
        ev("b", "stop", 3, 1),
        ev("c", "killed", 4),
        ev("c", "start", 5, 1)
      ],
      10
    )
    expect(built.violations).toHaveLength(3)
  })
})

describe("overlap episodes", () => {
  it("counts half-open intervals: a stop and a start in the same millisecond do not overlap", () => {
    const built = intervals([...base, ev("a", "stop", 500, 0), ev("c", "start", 500, 0)], 1000).intervals
    expect(overlapEpisodes(built, 2)).toEqual([])
  })

  it("finds the stretch with more than N bodies, its peak and the processes in it", () => {
    const built = intervals(
      [...base, ev("c", "start", 300, 0), ev("d", "start", 310, 1), ev("d", "stop", 320, 1), ev("a", "stop", 350, 0)],
      1000
    ).intervals
    expect(overlapEpisodes(built, 2)).toEqual([{ from: 300, to: 350, peak: 4, procs: ["a", "b", "c", "d"] }])
  })

  it("finds two processes on one slot even when no more than N run", () => {
    const built = intervals([ev("a", "start", 0, 0), ev("b", "start", 10, 0), ev("b", "stop", 30, 0)], 100).intervals
    expect(overlapEpisodes(built, 2)).toEqual([])
    expect(slotConflicts(built)).toEqual([{ from: 10, to: 30, peak: 2, procs: ["a", "b"], slot: 0 }])
  })
})

describe("check", () => {
  it("accepts kill -9 then a standby taking over, and measures the recovery", () => {
    const faults: Array<Fault> = [{ kind: "kill9", t: 1000, targets: ["a"] }]
    const report = check(log([ev("a", "killed", 1001), ev("c", "start", 1012, 0)], faults), policy)
    expect(report.violations).toEqual([])
    expect(report.byKind.kill9).toEqual({ faults: 1, overlaps: 0, maxOverlapMs: 0, maxRecoveryMs: 12 })
  })

  it("accepts an overlap of a few ms after pg_terminate_backend and reports it", () => {
    const faults: Array<Fault> = [{ kind: "terminate", t: 1000, targets: ["a"] }]
    const report = check(log([ev("c", "start", 1005, 0), ev("a", "stop", 1007, 0)], faults), policy)
    expect(report.violations).toEqual([])
    expect(report.byKind.terminate).toEqual({ faults: 1, overlaps: 1, maxOverlapMs: 2, maxRecoveryMs: 7 })
  })

  it("flags any overlap after kill -9 (the kill time is the body's stop)", () => {
    const faults: Array<Fault> = [{ kind: "kill9", t: 1000, targets: ["a"] }]
    const report = check(log([ev("c", "start", 1000, 0), ev("a", "killed", 1001)], faults), policy)
    expect(report.violations.some((v) => v.includes("after kill9") && v.includes("must cause no overlap"))).toBe(true)
  })

  it("flags an overlap after a network cut, however short", () => {
    const faults: Array<Fault> = [{ kind: "cut", t: 1000, targets: ["a"] }]
    const report = check(log([ev("c", "start", 12_000, 0), ev("a", "stop", 12_001, 0)], faults), policy)
    expect(report.violations.some((v) => v.includes("after cut"))).toBe(true)
  })

  it("flags a third body with no fault at all", () => {
    const report = check(log([ev("c", "start", 5000, 0), ev("c", "stop", 5100, 0)]), policy)
    expect(report.violations.some((v) => v.includes("3 bodies ran at once for 100 ms") && v.includes("no fault"))).toBe(
      true
    )
  })

  it("flags an overlap after pg_terminate_backend longer than the detection window", () => {
    const faults: Array<Fault> = [{ kind: "terminate", t: 1000, targets: ["a"] }]
    const report = check(log([ev("c", "start", 1005, 0), ev("a", "stop", 1080, 0)], faults), policy)
    expect(report.violations.some((v) => v.includes("longer than 50 ms"))).toBe(true)
  })

  it("flags a slow recovery, and a fleet that never gets back to N", () => {
    const slow = check(
      log([ev("a", "stop", 1010, 0), ev("c", "start", 9000, 0)], [{ kind: "sigterm", t: 1000, targets: ["a"] }]),
      policy
    )
    expect(slow.violations).toEqual(["sigterm at 1000: back to 2 holders after 8000 ms (> 5000)"])
    const never = check(log([ev("a", "stop", 1010, 0)], [{ kind: "restart", t: 1000, targets: ["a", "b"] }]), policy)
    expect(never.violations.some((v) => v.includes("never got back"))).toBe(true)
  })

  it("measures a cut from the fault until the server freed the slot and a standby took it", () => {
    const faults: Array<Fault> = [{ kind: "cut", t: 1000, targets: ["a"] }]
    const built = intervals([...base, ev("a", "stop", 5000, 0), ev("c", "start", 12_500, 0)], 20_000).intervals
    const [recovery] = recoveries(faults, built, 2)
    expect(recovery).toMatchObject({ victims: ["a"], stoppedMs: 4000, recoveredAt: 12_500, ms: 11_500 })
  })

  it("a body killed in the very millisecond of the fault is its victim", () => {
    const built = intervals([...base, ev("a", "killed", 1000), ev("c", "start", 1003, 0)], 20_000).intervals
    expect(recoveries([{ kind: "kill9", t: 1000, targets: ["a"] }], built, 2)[0]).toMatchObject({
      victims: ["a"],
      ms: 3
    })
  })

  it("a fault on a standby disturbs nothing and recovers at once", () => {
    const built = intervals([...base, ev("c", "killed", 3000)], 20_000).intervals
    expect(recoveries([{ kind: "kill9", t: 3000, targets: ["c"] }], built, 2)[0]).toMatchObject({ victims: [], ms: 0 })
  })

  it("checks signals sent while stable: exactly once to each holder, and not those near a fault", () => {
    const signals: Array<SentSignal> = [
      { payload: "s1", sentAt: 3000, ackedAt: 3002 },
      { payload: "s2", sentAt: 4000, ackedAt: 4002 },
      { payload: "s3", sentAt: 9500, ackedAt: 9502 }
    ]
    const faults: Array<Fault> = [{ kind: "kill9", t: 10_000, targets: ["a"] }]
    const deliveries = [
      ev("a", "signal", 3003, 0, "s1"),
      ev("b", "signal", 3003, 1, "s1"),
      ev("a", "signal", 4003, 0, "s2"),
      ev("a", "killed", 10_001),
      ev("c", "start", 10_010, 0)
    ]
    const missed = check(log(deliveries, faults, signals), policy)
    expect(missed.violations).toEqual([
      'b (slot 1, holding since 120) received "s2", sent at 4000, 0 times instead of once'
    ])
    expect(missed.signals).toEqual({ sent: 3, stable: 2, deliveries: 4 })
    const twice = check(
      log([...deliveries, ev("b", "signal", 4003, 1, "s2"), ev("b", "signal", 4004, 1, "s2")], faults, signals),
      policy
    )
    expect(twice.violations.filter((v) => v.includes("2 times"))).toHaveLength(2)
    const fine = check(log([...deliveries, ev("b", "signal", 4003, 1, "s2")], faults, signals), policy)
    expect(fine.violations).toEqual([])
  })

  it("the seeded generator replays the same sequence", () => {
    const a = seededRandom(42)
    const b = seededRandom(42)
    const first = Array.from({ length: 5 }, a)
    expect(Array.from({ length: 5 }, b)).toEqual(first)
    expect(first.every((x) => x >= 0 && x < 1)).toBe(true)
    expect(Array.from({ length: 5 }, seededRandom(43))).not.toEqual(first)
  })
})

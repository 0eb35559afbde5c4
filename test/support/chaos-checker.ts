/**
 * Pure checks over the event log of a chaos run: how many bodies ran at once, how long the fleet took to get
 * back to N holders after each fault, and whether every signal sent while the holders were stable reached each
 * of them exactly once.
 *
 * The log is what the processes printed (`start`, `stop`, `signal`, with their own `Date.now()`), plus what
 * the test recorded itself: the faults it injected and, for a process it killed with SIGKILL, a `killed` event
 * taken right after the kill (such a process prints no `stop`, and can print nothing after that moment).
 */

export type FaultKind = "kill9" | "sigterm" | "terminate" | "restart" | "cut"

export const faultKinds: ReadonlyArray<FaultKind> = ["kill9", "sigterm", "terminate", "restart", "cut"]

export interface LogEvent {
  /** The test's name for the process. */
  readonly proc: string
  readonly event: "start" | "stop" | "signal" | "killed"
  readonly t: number
  readonly slot?: number | undefined
  readonly payload?: string | undefined
}

export interface Fault {
  readonly kind: FaultKind
  /** When the test began to inject it. */
  readonly t: number
  /** The processes it aims at (every process for a restart); those running a body at `t` must stop. */
  readonly targets: ReadonlyArray<string>
}

export interface SentSignal {
  readonly payload: string
  /** Just before the statement was sent, and just after it returned. */
  readonly sentAt: number
  readonly ackedAt: number
}

export interface ChaosLog {
  readonly events: ReadonlyArray<LogEvent>
  readonly faults: ReadonlyArray<Fault>
  readonly signals: ReadonlyArray<SentSignal>
  /** When the run ended: bodies still running then are cut off here. */
  readonly end: number
}

export interface Policy {
  readonly n: number
  /** Longest acceptable episode of more than N bodies. */
  readonly maxOverlapMs: number
  /** Faults after which such an episode is the documented detection window rather than a violation. */
  readonly overlapKinds: ReadonlyArray<FaultKind>
  /** Longest acceptable time from a fault until N bodies run again, its targets stopped. */
  readonly recoveryBoundMs: Readonly<Record<FaultKind, number>>
  /** A fault disturbs the fleet from its start until `quietMs` after its recovery. */
  readonly quietMs: number
  /** A holder counts as stable for a signal when it ran from this long before sending until this long after. */
  readonly holdMarginMs: number
}

export const defaultPolicy = (n: number): Policy => ({
  n,
  maxOverlapMs: 50,
  overlapKinds: ["terminate", "restart"],
  recoveryBoundMs: { kill9: 5_000, sigterm: 5_000, terminate: 5_000, restart: 15_000, cut: 20_000 },
  quietMs: 1_500,
  holdMarginMs: 500
})

/** One run of a body: from its start to its stop (or the kill, or the end of the run). */
export interface Interval {
  readonly proc: string
  readonly slot: number
  readonly start: number
  readonly stop: number
  /** How it ended: a `stop` event, the test's `killed`, or still running at the end of the run. */
  readonly end: "stop" | "killed" | "end"
}

/** A stretch of time during which more than N bodies ran. */
export interface Episode {
  readonly from: number
  readonly to: number
  readonly peak: number
  readonly procs: ReadonlyArray<string>
}

export interface Recovery {
  readonly fault: Fault
  /** The targets that were running a body when the fault began. */
  readonly victims: ReadonlyArray<string>
  /** How long after the fault the last victim's body stopped (0 without victims). */
  readonly stoppedMs: number
  /** When N bodies ran again with every victim stopped; undefined if never within the run. */
  readonly recoveredAt: number | undefined
  readonly ms: number
}

export interface KindFigures {
  readonly faults: number
  readonly overlaps: number
  readonly maxOverlapMs: number
  readonly maxRecoveryMs: number
}

export interface SignalFigures {
  readonly sent: number
  /** Signals sent while the fleet was stable, and the deliveries to stable holders they were checked for. */
  readonly stable: number
  readonly deliveries: number
}

export interface Report {
  readonly violations: ReadonlyArray<string>
  readonly intervals: ReadonlyArray<Interval>
  readonly episodes: ReadonlyArray<Episode & { readonly fault: Fault | undefined }>
  readonly recoveries: ReadonlyArray<Recovery>
  readonly byKind: Readonly<Record<FaultKind, KindFigures>>
  readonly signals: SignalFigures
}

const byTime = <A extends { readonly t: number }>(events: ReadonlyArray<A>) =>
  events
    .map((event, index) => ({ event, index }))
    .sort((a, b) => a.event.t - b.event.t || a.index - b.index)
    .map(({ event }) => event)

/**
 * The body intervals of every process. Anomalies (a start while running, a stop without a start, an event
 * after the kill) are returned as violations.
 */
export const intervals = (
  events: ReadonlyArray<LogEvent>,
  end: number
): { readonly intervals: ReadonlyArray<Interval>; readonly violations: ReadonlyArray<string> } => {
  const result: Array<Interval> = []
  const violations: Array<string> = []
  const procs = new Map<string, Array<LogEvent>>()
  for (const event of events) {
    const list = procs.get(event.proc) ?? []
    list.push(event)
    procs.set(event.proc, list)
  }
  for (const [proc, list] of procs) {
    let open: LogEvent | undefined
    let killedAt: number | undefined
    for (const event of byTime(list)) {
      if (killedAt !== undefined && event.event !== "killed") {
        violations.push(`${proc}: ${event.event} at ${event.t} after it was killed at ${killedAt}`)
        continue
      }
      if (event.event === "start") {
        if (open !== undefined) violations.push(`${proc}: a second start at ${event.t} while its body ran`)
        else open = event
      } else if (event.event === "stop") {
        if (open === undefined) violations.push(`${proc}: a stop at ${event.t} without a running body`)
        else {
          result.push({ proc, slot: open.slot ?? -1, start: open.t, stop: event.t, end: "stop" })
          open = undefined
        }
      } else if (event.event === "killed") {
        killedAt = event.t
        if (open !== undefined) {
          result.push({ proc, slot: open.slot ?? -1, start: open.t, stop: event.t, end: "killed" })
          open = undefined
        }
      }
    }
    if (open !== undefined) result.push({ proc, slot: open.slot ?? -1, start: open.t, stop: end, end: "end" })
  }
  return { intervals: result.sort((a, b) => a.start - b.start), violations }
}

interface Change {
  readonly t: number
  readonly delta: 1 | -1
  readonly proc: string
}

// Intervals are half-open, [start, stop): at the same millisecond a stop comes before a start.
const changes = (list: ReadonlyArray<Interval>): ReadonlyArray<Change> =>
  list
    .flatMap(
      (i): Array<Change> => [
        { t: i.start, delta: 1, proc: i.proc },
        { t: i.stop, delta: -1, proc: i.proc }
      ]
    )
    .sort((a, b) => a.t - b.t || a.delta - b.delta)

/** How many bodies run at instant `t`. */
export const runningAt = (list: ReadonlyArray<Interval>, t: number): number =>
  list.filter((i) => i.start <= t && t < i.stop).length

/** Every stretch during which more than `n` bodies ran, by a sweep over starts and stops. */
export const overlapEpisodes = (list: ReadonlyArray<Interval>, n: number): ReadonlyArray<Episode> => {
  const episodes: Array<Episode> = []
  let count = 0
  let current: { from: number; peak: number; procs: Set<string> } | undefined
  const running = new Set<string>()
  const all = changes(list)
  for (let k = 0; k < all.length; k++) {
    const change = all[k]!
    count += change.delta
    if (change.delta === 1) running.add(change.proc)
    else running.delete(change.proc)
    // Apply every change of one millisecond before judging the count.
    if (k + 1 < all.length && all[k + 1]!.t === change.t) continue
    if (count > n) {
      if (current === undefined) current = { from: change.t, peak: count, procs: new Set(running) }
      else {
        current.peak = Math.max(current.peak, count)
        for (const proc of running) current.procs.add(proc)
      }
    } else if (current !== undefined) {
      episodes.push({ from: current.from, to: change.t, peak: current.peak, procs: [...current.procs].sort() })
      current = undefined
    }
  }
  return episodes
}

/** Stretches during which two processes ran the body for the same slot. */
export const slotConflicts = (list: ReadonlyArray<Interval>): ReadonlyArray<Episode & { readonly slot: number }> => {
  const slots = [...new Set(list.map((i) => i.slot))]
  return slots.flatMap((slot) =>
    overlapEpisodes(
      list.filter((i) => i.slot === slot),
      1
    ).map((episode) => ({ ...episode, slot }))
  )
}

/** The first instant at or after `from` at which at least `n` bodies run. */
const firstFull = (list: ReadonlyArray<Interval>, n: number, from: number): number | undefined => {
  const candidates = [from, ...list.map((i) => i.start).filter((t) => t > from)].sort((a, b) => a - b)
  return candidates.find((t) => runningAt(list, t) >= n)
}

/**
 * How long the fleet took to recover from each fault: from the fault until N bodies run again and every target
 * that ran a body when the fault began has stopped it.
 */
export const recoveries = (
  faults: ReadonlyArray<Fault>,
  list: ReadonlyArray<Interval>,
  n: number
): ReadonlyArray<Recovery> =>
  faults.map((fault) => {
    // A body killed in the very millisecond of the fault ends at `t`: it counts as hit too.
    const hit = list.filter((i) => fault.targets.includes(i.proc) && i.start <= fault.t && fault.t <= i.stop)
    const stopped = hit.every((i) => i.end !== "end")
    const from = Math.max(fault.t, ...hit.map((i) => i.stop))
    const recoveredAt = stopped ? firstFull(list, n, from) : undefined
    return {
      fault,
      victims: hit.map((i) => i.proc),
      stoppedMs: from - fault.t,
      recoveredAt,
      ms: recoveredAt === undefined ? Number.POSITIVE_INFINITY : recoveredAt - fault.t
    }
  })

/** The fault whose disturbance an episode falls in: the latest one begun at or before it, until its recovery. */
const attribute = (episode: Episode, recovered: ReadonlyArray<Recovery>, quietMs: number) =>
  [...recovered]
    .filter((r) => r.fault.t <= episode.from && episode.from <= (r.recoveredAt ?? r.fault.t + 30_000) + quietMs)
    .sort((a, b) => b.fault.t - a.fault.t)[0]?.fault

/** Whether a stretch of time is free of every fault's disturbance: from its start until `quietMs` after recovery. */
const quiet = (from: number, to: number, recovered: ReadonlyArray<Recovery>, quietMs: number) =>
  recovered.every((r) => to < r.fault.t || from > (r.recoveredAt ?? Number.POSITIVE_INFINITY) + quietMs)

const checkSignals = (
  log: ChaosLog,
  list: ReadonlyArray<Interval>,
  recovered: ReadonlyArray<Recovery>,
  policy: Policy
): { readonly figures: SignalFigures; readonly violations: ReadonlyArray<string> } => {
  const violations: Array<string> = []
  const received = new Map<string, Array<LogEvent>>()
  for (const event of log.events) {
    if (event.event !== "signal") continue
    const key = `${event.proc}\u0000${event.payload}`
    const list = received.get(key) ?? []
    list.push(event)
    received.set(key, list)
  }
  for (const list of received.values()) {
    if (list.length > 1) {
      violations.push(`${list[0]!.proc} received ${JSON.stringify(list[0]!.payload)} ${list.length} times`)
    }
  }
  let stable = 0
  let deliveries = 0
  for (const signal of log.signals) {
    const from = signal.sentAt - policy.holdMarginMs
    const to = signal.ackedAt + policy.holdMarginMs
    if (to > log.end || !quiet(from, to, recovered, policy.quietMs)) continue
    const holders = list.filter((i) => i.start <= from && to < i.stop)
    if (holders.length === 0) continue
    stable++
    for (const holder of holders) {
      deliveries++
      const got = (received.get(`${holder.proc}\u0000${signal.payload}`) ?? []).filter((e) => e.slot === holder.slot)
      if (got.length !== 1) {
        violations.push(
          `${holder.proc} (slot ${holder.slot}, holding since ${holder.start}) received ` +
            `${JSON.stringify(signal.payload)}, sent at ${signal.sentAt}, ${got.length} times instead of once`
        )
      }
    }
  }
  return { figures: { sent: log.signals.length, stable, deliveries }, violations }
}

/** Checks a whole run against the policy. */
export const check = (log: ChaosLog, policy: Policy): Report => {
  const built = intervals(log.events, log.end)
  const list = built.intervals
  const violations: Array<string> = [...built.violations]
  const recovered = recoveries(log.faults, list, policy.n)
  const episodes = overlapEpisodes(list, policy.n).map((episode) => ({
    ...episode,
    fault: attribute(episode, recovered, policy.quietMs)
  }))
  for (const episode of episodes) {
    const ms = episode.to - episode.from
    const what = `${episode.peak} bodies ran at once for ${ms} ms from ${episode.from} (${episode.procs.join(", ")})`
    if (episode.fault === undefined) violations.push(`${what}, after no fault`)
    else if (!policy.overlapKinds.includes(episode.fault.kind)) {
      violations.push(`${what}, after ${episode.fault.kind} at ${episode.fault.t}, which must cause no overlap`)
    } else if (ms > policy.maxOverlapMs) {
      violations.push(`${what}, after ${episode.fault.kind}: longer than ${policy.maxOverlapMs} ms`)
    }
  }
  for (const conflict of slotConflicts(list)) {
    const fault = attribute(conflict, recovered, policy.quietMs)
    const ms = conflict.to - conflict.from
    if (fault === undefined || !policy.overlapKinds.includes(fault.kind) || ms > policy.maxOverlapMs) {
      violations.push(
        `slot ${conflict.slot} ran in ${conflict.procs.join(" and ")} at once for ${ms} ms from ${conflict.from}` +
          (fault === undefined ? "" : ` (after ${fault.kind})`)
      )
    }
  }
  for (const r of recovered) {
    const bound = policy.recoveryBoundMs[r.fault.kind]
    if (r.recoveredAt === undefined) {
      violations.push(`${r.fault.kind} at ${r.fault.t} (${r.victims.join(", ")}): the fleet never got back to N`)
    } else if (r.ms > bound) {
      violations.push(`${r.fault.kind} at ${r.fault.t}: back to ${policy.n} holders after ${r.ms} ms (> ${bound})`)
    }
  }
  const signals = checkSignals(log, list, recovered, policy)
  violations.push(...signals.violations)
  const byKind = Object.fromEntries(
    faultKinds.map((kind) => {
      const mine = episodes.filter((e) => e.fault?.kind === kind)
      const times = recovered.filter((r) => r.fault.kind === kind).map((r) => r.ms)
      return [
        kind,
        {
          faults: times.length,
          overlaps: mine.length,
          maxOverlapMs: Math.max(0, ...mine.map((e) => e.to - e.from)),
          maxRecoveryMs: Math.max(0, ...times)
        }
      ]
    })
  ) as Record<FaultKind, KindFigures>
  return { violations, intervals: list, episodes, recoveries: recovered, byKind, signals: signals.figures }
}

const pad = (text: string, width: number) => text.padEnd(width)

/** The summary table: one row per fault kind. */
export const formatReport = (report: Report): string => {
  const header = ["fault", "count", "overlaps", "max overlap ms", "max recovery ms"]
  const rows = faultKinds.map((kind) => {
    const k = report.byKind[kind]
    return [kind, String(k.faults), String(k.overlaps), String(k.maxOverlapMs), String(k.maxRecoveryMs)]
  })
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) => `| ${cells.map((c, i) => pad(c, widths[i]!)).join(" | ")} |`
  const s = report.signals
  return [
    line(header),
    `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`,
    ...rows.map(line),
    "",
    `signals: ${s.sent} sent, ${s.stable} while stable, ${s.deliveries} deliveries to stable holders checked`,
    report.violations.length === 0 ? "no violations" : `violations:\n  ${report.violations.join("\n  ")}`
  ].join("\n")
}

/** A small seeded generator (mulberry32): the same seed gives the same sequence of faults. */
export const seededRandom = (seed: number) => {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

import { afterEach, describe, expect, it } from "@effect/vitest"
import { type Dyno, has, killAll, sleep, spawnDyno, waitFor } from "./support/fleet.js"
import { databaseUrl, uniqueKeyBase } from "./support/layer.js"

const spawned: Array<Dyno> = []
const fleet = (n: number, env: Record<string, string | undefined>) =>
  Array.from({ length: n }, (_, i) => {
    const dyno = spawnDyno({ DATABASE_URL: databaseUrl(), STANDBY_INTERVAL: "200 millis", ...env }, `d${i}`)
    spawned.push(dyno)
    return dyno
  })

afterEach(async () => {
  await killAll(spawned.splice(0))
})

const settle = async (dynos: ReadonlyArray<Dyno>) => {
  await waitFor("every process to report ready", () => dynos.every((d) => has(d, "ready")))
  // Every standby has tried at least once after its first state report; give stragglers a few polls.
  await sleep(1000)
}

describe("exclusive across processes", () => {
  it("5 processes with dynos 1: exactly one runs the block", async () => {
    const dynos = fleet(5, { KEY_BASE: uniqueKeyBase("one"), DYNOS: "1" })
    await settle(dynos)
    await waitFor("one process to run the block", () => dynos.some((d) => d.running()))
    await sleep(500)
    expect(dynos.filter((d) => d.running())).toHaveLength(1)
  })

  it.each([2, 3, 4])("5 processes with dynos %i: exactly that many run", async (k) => {
    const dynos = fleet(5, { KEY_BASE: uniqueKeyBase(`k${k}`), DYNOS: String(k) })
    await settle(dynos)
    // On a slow machine a holder may still be starting: wait for k, then check that it stays exactly k.
    await waitFor(`${k} processes to run the block`, () => dynos.filter((d) => d.running()).length >= k)
    await sleep(500)
    const running = dynos.filter((d) => d.running())
    expect(running).toHaveLength(k)
    const slots = running.map((d) => d.events.find((e) => e.event === "start")?.slot).sort()
    expect(slots).toEqual(Array.from({ length: k }, (_, i) => i))
  })

  it("process types: worker.1 with defaults does not run, web.12 does", async () => {
    const keyBase = uniqueKeyBase("ptype")
    const [worker] = fleet(1, { KEY_BASE: keyBase, DYNO: "worker.1" })
    await waitFor("the worker to report ready", () => has(worker!, "ready"))
    expect(worker!.events.find((e) => e.event === "ready")?.state).toBe("Skipped")
    const [web] = fleet(1, { KEY_BASE: keyBase, DYNO: "web.12" })
    await waitFor("web.12 to start the block", () => web!.running())
    await sleep(300)
    expect(worker!.running()).toBe(false)
  })

  it("processType as a string, a RegExp and false", async () => {
    const cases: Array<[string, string, boolean]> = [
      ['"worker"', "worker.3", true],
      ['"worker"', "web.1", false],
      ['{"regexp":"^clock\\\\."}', "clock.1", true],
      ['{"regexp":"^clock\\\\."}', "web.1", false],
      ["false", "release.1", true]
    ]
    const dynos = cases.map(
      ([type, dyno]) => fleet(1, { KEY_BASE: uniqueKeyBase("pt"), DYNO: dyno, PROCESS_TYPE: type })[0]!
    )
    await settle(dynos)
    await waitFor("the matching processes to run", () => dynos.every((d, i) => !cases[i]![2] || d.running()))
    expect(dynos.map((d) => d.running())).toEqual(cases.map(([, , runs]) => runs))
  })

  it("two foreground blocks in a row both run and return their values", async () => {
    const [dyno] = fleet(1, { KEY_BASE: uniqueKeyBase("fg"), BACKGROUND: "false", RUNS: "2" })
    expect(await dyno!.exited).toBe(0)
    expect(dyno!.events.filter((e) => e.event === "result").map((e) => e.value)).toEqual(["run 0", "run 1"])
  })

  it("when the holder process exits, a running standby takes over", async () => {
    const keyBase = uniqueKeyBase("takeover")
    const [first] = fleet(1, { KEY_BASE: keyBase })
    await waitFor("the first process to run the block", () => first!.running())
    const [second] = fleet(1, { KEY_BASE: keyBase })
    await waitFor("the second process to stand by", () => has(second!, "ready"))
    await sleep(500)
    expect(second!.running()).toBe(false)
    first!.kill("SIGKILL")
    await waitFor("the standby to take over", () => second!.running(), 15_000)
  })
})

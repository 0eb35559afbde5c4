/**
 * Vitest global setup: provides every test with a real PostgreSQL server.
 *
 * With `DATABASE_URL` set, that server is used and none is started. Otherwise a throwaway server is started
 * for this run and removed when it ends, also when tests fail or the run is interrupted.
 */
import { readdirSync, rmSync } from "node:fs"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { TestProject } from "vitest/node"
import { bundle } from "./bundle.js"
import { startThrowawayPostgres } from "./postgres.js"

const root = fileURLToPath(new URL("../..", import.meta.url))

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    embedded: boolean
    /** Folder with every test fixture bundled as `<name>.mjs`. */
    fixturesDir: string
  }
}

const bundleFixtures = async (project: TestProject) => {
  const dir = join(root, ".tmp", `fixtures-${process.pid}`)
  const sources = join(root, "test", "fixtures")
  const entries = readdirSync(sources)
    .filter((name) => name.endsWith(".ts"))
    .map((name) => join(sources, name))
  await bundle(entries, dir)
  project.provide("fixturesDir", dir)
  return () => rmSync(dir, { recursive: true, force: true })
}

export default async function setup(project: TestProject) {
  const removeFixtures = await bundleFixtures(project)
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") {
    project.provide("databaseUrl", external)
    project.provide("embedded", false)
    return removeFixtures
  }
  const server = await startThrowawayPostgres()
  process.env.DATABASE_URL = server.url
  project.provide("databaseUrl", server.url)
  project.provide("embedded", true)
  const onSignal = (signal: NodeJS.Signals) => {
    void server.stop().finally(() => process.kill(process.pid, signal))
  }
  process.once("SIGINT", onSignal)
  process.once("SIGTERM", onSignal)
  return async () => {
    process.off("SIGINT", onSignal)
    process.off("SIGTERM", onSignal)
    removeFixtures()
    await server.stop()
  }
}

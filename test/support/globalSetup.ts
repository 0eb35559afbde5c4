/**
 * Vitest global setup: provides every test with a real PostgreSQL server.
 *
 * With `DATABASE_URL` set, that server is used and none is started. Otherwise a throwaway server is started
 * for this run and removed when it ends, also when tests fail or the run is interrupted.
 */
import type { TestProject } from "vitest/node"
import { startThrowawayPostgres } from "./postgres.js"

declare module "vitest" {
  export interface ProvidedContext {
    databaseUrl: string
    embedded: boolean
  }
}

export default async function setup(project: TestProject) {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") {
    project.provide("databaseUrl", external)
    project.provide("embedded", false)
    return
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
    await server.stop()
  }
}

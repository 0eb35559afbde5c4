/**
 * Layers and helpers shared by the tests: the library against the test PostgreSQL.
 */
import { PgClient } from "@effect/sql-pg"
import { ConfigProvider, Layer, Redacted } from "effect"
import { inject } from "vitest"
import { LoneDyno, type LoneDynoConfig } from "../../src/index.js"

export const databaseUrl = () => inject("databaseUrl")

export const postgres = () => PgClient.layer({ url: Redacted.make(databaseUrl()), maxConnections: 4 })

/** The library with test-friendly timings; `DYNO` comes from `dyno` (none by default). */
export const loneDyno = (options: LoneDynoConfig.LoneDynoOptions = {}, env: Record<string, string> = {}) =>
  LoneDyno.layer({ standbyInterval: "200 millis", ...options }).pipe(
    Layer.provide(postgres()),
    Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env)))))
  )

let counter = 0
/** A key base no other test uses. */
export const uniqueKeyBase = (label: string) => `${label} ${process.pid}-${Date.now()}-${counter++}`

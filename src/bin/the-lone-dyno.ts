#!/usr/bin/env node
/**
 * The `the-lone-dyno` executable: see who holds the slots of a key base, signal the holders, or run a program
 * on at most N processes. Run `the-lone-dyno --help`.
 *
 * @since 0.1.0
 */
import { cli } from "./cli.js"
import { runMain } from "./runtime.js"

let started = false

/**
 * Runs the command with this process's arguments, once: later calls do nothing, so a script that imports
 * this module and calls `main` runs the command exactly once.
 *
 * @since 0.1.0
 * @category running
 */
export const main = (): void => {
  if (started) return
  started = true
  runMain(cli(process.argv))
}

main()

/**
 * Bundles TypeScript entry points (test fixtures, the CLI) into single ESM files with esbuild, so that the
 * many child processes the tests start boot in a fraction of the time tsx takes to compile on the fly.
 */
import { build } from "esbuild"

// pg and other CommonJS dependencies call require(); an ESM bundle needs one.
const requireShim = [
  'import { createRequire as __createRequire } from "node:module";',
  "const require = __createRequire(import.meta.url);"
].join(" ")

export const bundle = async (entryPoints: ReadonlyArray<string>, outdir: string): Promise<void> => {
  await build({
    entryPoints: [...entryPoints],
    outdir,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    outExtension: { ".js": ".mjs" },
    external: ["pg-native"],
    banner: { js: requireShim },
    logLevel: "error"
  })
}

/** Event lines for the parent benchmark: `@@ {json}` on stdout, timestamped on the shared wall clock. */
export const emit = (event: Record<string, unknown>) => {
  const t = performance.timeOrigin + performance.now()
  process.stdout.write(`@@ ${JSON.stringify({ ...event, pid: process.pid, t })}\n`)
}

#!/usr/bin/env bash
# A walk-through of the `the-lone-dyno` command: run a program on at most one process, see who holds the
# slot, signal the holder, fail over, and shut down.
#
#   DATABASE_URL=postgres://localhost/mydb bash examples/cli.sh
#
# Installed from npm, the command is `npx the-lone-dyno`. In a checkout of this repository it runs from the
# sources through tsx; set TLD to use another build, such as TLD="node dist/bin/the-lone-dyno.js".
set -euo pipefail
: "${DATABASE_URL:?set DATABASE_URL to a PostgreSQL connection URL}"
cd "$(dirname "$0")/.."
read -r -a tld <<<"${TLD:-node --import tsx src/bin/the-lone-dyno.ts}"
key=(--key-base "cli walk-through")
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

say "Two processes run the same program; only one may run it at a time (--dynos 1 is the default)."
start() {
  DYNO="$1" "${tld[@]}" run "${key[@]}" -- node -e "setInterval(() => console.log('$1: reticulating splines'), 1000)" &
  pids+=($!)
}
start web.1
until "${tld[@]}" status "${key[@]}" --json | grep -q '"the-lone-dyno web.1"'; do sleep 1; done
start web.2
sleep 4

say "Who holds the slot? The holder is named by its \$DYNO."
"${tld[@]}" status "${key[@]}"
"${tld[@]}" status "${key[@]}" --json

say "Send the holder a signal (a program gets payloads through signal.watch(); see examples/watch.ts)."
"${tld[@]}" signal "hi ho silver!" "${key[@]}"

say "Kill web.1 (SIGKILL, as a crash would): web.2 takes over and starts its copy of the program."
{ kill -9 "${pids[0]}" && wait "${pids[0]}"; } 2>/dev/null || true
sleep 3
"${tld[@]}" status "${key[@]}"

say "SIGTERM stops the program, then releases the slot."
kill -TERM "${pids[1]}"
wait "${pids[1]}" || true
"${tld[@]}" status "${key[@]}"

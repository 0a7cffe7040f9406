#!/usr/bin/env bash
# Builds, tests and runs the importer with cargo.
# API keys come from the environment, or from ./.env if it exists
# (lines like MAILCHIMP_APIKEY=...; the file is git-ignored).
set -euo pipefail
cd "$(dirname "$0")"

if [ -f .env ]; then
  set -a
  # shellcheck disable=SC1091
  . ./.env
  set +a
fi
export IMPORTER_STATE_DIR="${IMPORTER_STATE_DIR:-./state}"

binary=target/release/ometria-importer

build() {
  cargo build --release --locked --quiet
}

usage() {
  cat <<'HELP'
# ---
# version: Show the importer's version
# build: Build the importer (release)
# test: Run tests
# demo: Run the importer against built-in fake APIs (no keys needed)
# go: Run controller (until Ctrl+C, SIGTERM or state/controller.quit)
# once: Sync every list that is due, then exit (0 = all succeeded)
# check: Validate settings and state/state.json; show what the next tick would do
# sandbox: Serve only the fake APIs (see ometria-importer sandbox --help)
# bench: Run the benchmark scenarios (BENCHMARKS.md)
# ---
HELP
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$command" in
  version) build && exec "$binary" version ;;
  build) build && "$binary" version ;;
  test) exec cargo test --locked "$@" ;;
  go | once | check | demo | sandbox | bench) build && exec "$binary" "$command" "$@" ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Builds, tests and runs the importer: in Docker when a Docker engine
# answers, with plain cargo otherwise; RUN_MODE=docker|local forces one.
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

IMAGE="${IMAGE:-ometria-importer:latest}"
binary=target/release/ometria-importer

usage() {
  cat <<'HELP'
# ---
# version: Show the importer's version
# build: Build the importer (Docker image, or release binary)
# test: Run tests
# demo: Run the importer against built-in fake APIs (no keys needed)
# go: Run controller (until Ctrl+C, SIGTERM or state/controller.quit)
# once: Sync every list that is due, then exit (0 = all succeeded)
# check: Validate settings and state/state.json; show what the next tick would do (--online: ask Mailchimp about each list)
# plan: Show what the next sync of each due list would push, pushing and writing nothing (--list ID, --limit N, --json)
# sandbox: Serve only the fake APIs (see ometria-importer sandbox --help)
# bench: Run the benchmark scenarios (BENCHMARKS.md)
# history: Show the run history of state/ledger.sqlite3 (--list ID, --limit N, --json)
# forget: Have a list's next sync push every member again (--list ID)
# webhooks: Register, list or remove the Mailchimp webhook of each list of state/state.json (register|list|remove --url URL)
# ---
# RUN_MODE=docker|local chooses; by default Docker when an engine answers.
HELP
}

mode="${RUN_MODE:-}"
if [ -z "$mode" ]; then
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    mode=docker
  else
    mode=local
  fi
fi

# Settings passed into the container when they are set here.
settings=(MAILCHIMP_APIKEY OMETRIA_APIKEY MAILCHIMP_BASE_URL OMETRIA_BASE_URL OMETRIA_API
  IMPORTER_TICK_SECONDS IMPORTER_REFRESH_SECONDS IMPORTER_MAX_CONCURRENT_LISTS
  MAILCHIMP_MAX_CONNECTIONS OMETRIA_MAX_REQUESTS_PER_SECOND IMPORTER_LOG_FORMAT
  IMPORTER_OVERLAP_SECONDS IMPORTER_GRACE_SECONDS IMPORTER_HTTP_TIMEOUT_SECONDS IMPORTER_RETRY_ATTEMPTS
  IMPORTER_MAX_DELETE_FRACTION IMPORTER_WEBHOOK_SECRET IMPORTER_WEBHOOK_DEBOUNCE_SECONDS
  IMPORTER_STATE_WRITE_SECONDS)

docker_build() {
  docker build -t "$IMAGE" .
}

docker_image() {
  docker image inspect "$IMAGE" >/dev/null 2>&1 || docker_build
}

# Runs the image on ./state (as this user, so that the files stay yours),
# with the metrics port published, and the webhook receiver's when
# IMPORTER_WEBHOOK_ADDR is set (it listens on all the container's
# addresses, port 9899).
docker_run() {
  docker_image
  local args=(--rm -v "$PWD/state:/opt/ometria/state" --user "$(id -u):$(id -g)"
    -p "${METRICS_PORT:-9898}:9898")
  if [ -n "${IMPORTER_WEBHOOK_ADDR:-}" ]; then
    args+=(-e IMPORTER_WEBHOOK_ADDR=0.0.0.0:9899 -p "${WEBHOOK_PORT:-9899}:9899")
  fi
  [ -t 0 ] && [ -t 1 ] && args+=(-it)
  for name in "${settings[@]}"; do
    [ -n "${!name:-}" ] && args+=(-e "$name")
  done
  exec docker run "${args[@]}" "$IMAGE" "$@"
}

# Runs a command that only reads ./state or edits the ledger (plan,
# history, forget), without publishing a port, so that it works beside a
# running daemon.
docker_state() {
  docker_image
  local args=(--rm -v "$PWD/state:/opt/ometria/state" --user "$(id -u):$(id -g)")
  for name in "${settings[@]}"; do
    [ -n "${!name:-}" ] && args+=(-e "$name")
  done
  exec docker run "${args[@]}" "$IMAGE" "$@"
}

build_local() {
  cargo build --release --locked --quiet
}

command="${1:-}"
[ $# -gt 0 ] && shift
case "$mode:$command" in
  docker:version) docker_image && exec docker run --rm "$IMAGE" version ;;
  docker:build) docker_build ;;
  docker:test) exec docker build --target test -t "$IMAGE-test" . ;;
  docker:demo | docker:bench) docker_image && exec docker run --rm "$IMAGE" "$command" "$@" ;;
  docker:sandbox) docker_image && exec docker run --rm -p "${SANDBOX_PORT:-8900}:8900" "$IMAGE" sandbox --bind 0.0.0.0 "$@" ;;
  docker:go | docker:once | docker:check) docker_run "$command" "$@" ;;
  docker:plan | docker:history | docker:forget | docker:webhooks) docker_state "$command" "$@" ;;
  local:version) build_local && exec "$binary" version ;;
  local:build) build_local && "$binary" version ;;
  local:test) exec cargo test --locked "$@" ;;
  local:go | local:once | local:check | local:plan | local:demo | local:sandbox | local:bench | local:history | local:forget | local:webhooks)
    export IMPORTER_STATE_DIR="${IMPORTER_STATE_DIR:-./state}"
    build_local && exec "$binary" "$command" "$@"
    ;;
  *:) usage ;;
  *)
    usage >&2
    echo "run.sh: unknown command \"$command\"" >&2
    exit 2
    ;;
esac

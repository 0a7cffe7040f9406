# shellcheck shell=bash
# Sourced by the contract scripts: a work folder removed on exit (with the
# mock and the importer, if they run), the keys mock.py accepts, and
# start_mock, which runs mock.py with the given flags and sets $mock to
# its address.

work="$(mktemp -d)"
mock_pid=""
importer_pid=""
cleanup() {
  [ -n "$importer_pid" ] && kill "$importer_pid" 2>/dev/null || true
  [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

export MAILCHIMP_APIKEY=contract0mailchimp0key-us9 OMETRIA_APIKEY=contract-ometria-key

start_mock() {
  python3 -u scripts/contract/mock.py "$@" >"$work/mock.out" 2>"$work/mock.err" &
  mock_pid=$!
  for _ in $(seq 100); do
    grep -q '^ready ' "$work/mock.out" 2>/dev/null && break
    sleep 0.1
  done
  local port
  port="$(awk '/^ready /{print $2}' "$work/mock.out")"
  if [ -z "$port" ]; then
    echo "the mock did not start: $(cat "$work/mock.err")" >&2
    exit 1
  fi
  # shellcheck disable=SC2034 # used by the scripts that source this file
  mock="http://127.0.0.1:$port"
}

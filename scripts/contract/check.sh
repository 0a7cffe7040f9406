#!/usr/bin/env bash
# Runs the importer against the independent Python mock
# (scripts/contract/mock.py) as an operator would: `go` on a state file of
# several lists, with faults and live mutations during the LOAD, then the
# mutations stop and every entry syncs again (twice: see the late pushes
# below). Afterwards Ometria must hold exactly what Mailchimp holds, the
# state file must be right and the daemon must stop with exit 0 on the quit
# file.
#
#   scripts/contract/check.sh [fault-rate] [mutations-per-second] [mock flags: --shuffle-ties --same-second]
#
# The binary is the release build, built here, unless CONTRACT_BINARY
# names another (CI gives the one `cargo test` built, to spare a build).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
cd "$(dirname "$0")/../.."

fault_rate="${1:-0.1}"
mutations="${2:-20}"
shift $(($# < 2 ? $# : 2))
mock_flags=("$@")
binary="${CONTRACT_BINARY:-target/release/ometria-importer}"
if [ -z "${CONTRACT_BINARY:-}" ]; then
  cargo build --release --locked --quiet
fi
[ -x "$binary" ] || { echo "contract check: no binary at $binary" >&2; exit 1; }

source scripts/contract/common.sh

fail() {
  echo "contract check FAILED: $*" >&2
  echo "--- importer log (last 40 lines)" >&2
  tail -n 40 "$work/importer.log" >&2 || true
  exit 1
}

start_mock --lists c0ffee0001:4000,c0ffee0002:2500,c0ffee0003:1200 \
  --fault-rate "$fault_rate" --mutations "$mutations" "${mock_flags[@]}"

# Three lists, one of them twice with other parameters; unknown keys kept.
mkdir -p "$work/state"
cat >"$work/state/state.json" <<'JSON'
[
  {"list_id": "c0ffee0001", "items_per_request": 250, "worker_count": 4, "note": "kept"},
  {"list_id": "c0ffee0002", "items_per_request": 1000, "worker_count": 2, "refresh_seconds": 5},
  {"list_id": "c0ffee0003", "worker_count": 8},
  {"list_id": "c0ffee0001", "items_per_request": 100, "worker_count": 1}
]
JSON

export MAILCHIMP_BASE_URL="$mock/3.0" OMETRIA_BASE_URL="$mock"
export IMPORTER_STATE_DIR="$work/state" IMPORTER_TICK_SECONDS=1 IMPORTER_REFRESH_SECONDS=5
export IMPORTER_HTTP_TIMEOUT_SECONDS=4 IMPORTER_MAX_CONCURRENT_LISTS=3

"$binary" go >"$work/importer.log" 2>&1 &
importer_pid=$!

# curl without curl: METHOD URL, the answer's body on stdout.
http() {
  python3 -c 'import sys, urllib.request as u; print(u.urlopen(u.Request(sys.argv[2], method=sys.argv[1], data=b"" if sys.argv[1] == "POST" else None)).read().decode())' "$1" "$2"
}

# Each entry's cursor, or "null".
cursors() {
  python3 -c 'import json,sys; print(" ".join(str(e.get("latest_timestamp")) for e in json.load(open(sys.argv[1]))))' \
    "$work/state/state.json"
}
wait_for() { # predicate description seconds
  local deadline=$((SECONDS + $3))
  until eval "$1"; do
    kill -0 "$importer_pid" 2>/dev/null || fail "the importer exited while waiting for $2"
    [ $SECONDS -lt $deadline ] || fail "no $2 within $3 s"
    sleep 0.5
  done
}

wait_for '! cursors | grep -q None' "LOAD of every entry" 300
echo "LOAD done: $(cursors)"

# Stop changing members; every entry must then sync once more.
http POST "$mock/_control/mutations?on=0" >/dev/null
stopped="$(date -u +%Y-%m-%dT%H:%M:%S)"
newer() {
  python3 -c 'import json,sys; es=json.load(open(sys.argv[1])); sys.exit(0 if all((e.get("latest_timestamp") or "") > sys.argv[2] for e in es) else 1)' \
    "$work/state/state.json" "$stopped"
}
wait_for newer "SYNC of every entry after the mutations stopped" 300

# A push the importer gave up on (the mock's "slow" fault holds it 8 s, past
# the client timeout of 4 s) is still applied when the mock wakes up, and may
# overwrite a newer push of the same member. Every sync reads its window again
# from cursor - overlap, so the next SYNC of each entry repairs that; wait for
# one that starts after the last such late push could have landed.
stopped="$(date -u -d '+9 seconds' +%Y-%m-%dT%H:%M:%S)"
wait_for newer "SYNC of every entry after late pushes landed" 300

touch "$work/state/controller.quit"
deadline=$((SECONDS + 20))
while kill -0 "$importer_pid" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || fail "the importer did not stop on the quit file"
  sleep 0.2
done
set +e
wait "$importer_pid"
code=$?
set -e
importer_pid=""
[ "$code" = 0 ] || fail "exit code $code after the quit file"
[ ! -e "$work/state/controller.quit" ] || fail "the quit file is still there"
tail -n 1 "$work/importer.log" | grep -q 'controller: done\.' || fail "the log does not end with controller: done."

report="$(http GET "$mock/_verify")"
python3 - "$report" "$work/state/state.json" <<'PY' || fail "verification"
import json, sys
report, state = json.loads(sys.argv[1]), json.load(open(sys.argv[2]))
for list_id, r in report["lists"].items():
    print(f"  {list_id}: {r['members']} members, {r['missing']} missing, {r['wrong']} wrong")
    if r["missing"] or r["wrong"]:
        print("   ", json.dumps(r["examples"], ensure_ascii=False)[:600])
print(f"  writes {report['writes']}, stats {json.dumps(report['stats'])}")
assert report["ok"], "Ometria differs from Mailchimp"
assert [e["list_id"] for e in state] == ["c0ffee0001", "c0ffee0002", "c0ffee0003", "c0ffee0001"]
assert state[0]["note"] == "kept" and "start_offset" not in state[0]
assert all(isinstance(e["total_updates"], int) and isinstance(e["elapsed_seconds"], (int, float)) for e in state)
assert report["stats"]["max_in_flight"] <= 10
PY
echo "contract check passed (fault rate $fault_rate, $mutations mutations/s${mock_flags[*]:+, ${mock_flags[*]}})"

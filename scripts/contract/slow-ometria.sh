#!/usr/bin/env bash
# How the importer paces itself when Ometria's real limit is below the
# configured one (OMETRIA_MAX_REQUESTS_PER_SECOND, 8): one `once` LOAD of
# a 3,000-member list against the independent mock with its Ometria
# bucket at RATE requests per second. Prints the wall time and how many
# pushes were answered 429.
#
#   scripts/contract/slow-ometria.sh [RATE] [BINARY]
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
cd "$(dirname "$0")/../.."
rate="${1:-2}"
binary="${2:-target/release/ometria-importer}"
[ $# -ge 2 ] || cargo build --release --locked --quiet

source scripts/contract/common.sh
start_mock --lists c0ffee0001:3000 --ometria-rate "$rate"
mkdir "$work/state"
echo '[{"list_id": "c0ffee0001"}]' >"$work/state/state.json"

start=$(date +%s.%N)
MAILCHIMP_BASE_URL="$mock/3.0" OMETRIA_BASE_URL="$mock" IMPORTER_STATE_DIR="$work/state" \
  "$binary" once >"$work/importer.log" 2>&1
end=$(date +%s.%N)
python3 - "$mock" "$start" "$end" "$rate" <<'PY'
import json, sys, urllib.request
mock, start, end, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
stats = json.loads(urllib.request.urlopen(mock + "/_stats").read())
pushes = stats["ometria"] - stats["faults"].get("rate", 0)
print(f"Ometria at {rate:g}/s: {end - start:.1f} s (floor {pushes / rate:.1f} s for {pushes} pushes), "
      f"{stats['faults'].get('rate', 0)} pushes answered 429")
PY

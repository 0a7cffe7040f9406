#!/usr/bin/env bash
# Builds the Dockerfile for real with podman, from base images made here
# (no registry is needed), and runs the image: a sync against the sandbox
# must succeed, `podman stop` must end it with exit 0 and a correct state
# file. Needs root, podman, runc and debootstrap (Debian packages).
#
#   scripts/docker-smoke.sh            # base images are kept for the next run
#   SMOKE_KEEP=1 scripts/docker-smoke.sh  # keep the work folder and the image to look at
set -euo pipefail
cd "$(dirname "$0")/.."

work="$(mktemp -d /tmp/ometria-smoke.XXXXXX)"
container=ometria-smoke-$$
sandbox=ometria-smoke-sandbox-$$
cleanup() {
  podman rm -f "$container" "$sandbox" >/dev/null 2>&1 || true
  [ -n "${SMOKE_KEEP:-}" ] || {
    # The image and what its build left: remade by the next run. (Before
    # the work folder goes: it holds podman's containers.conf.)
    podman rmi -f "$image" >/dev/null 2>&1 || true
    podman image prune -f >/dev/null 2>&1 || true
    rm -rf "$work"
  }
}
trap cleanup EXIT
step() { printf '\n== %s (%ss)\n' "$1" "$SECONDS"; }

# podman on these machines: runc, and limits a build of this size needs.
export CONTAINERS_CONF="$work/containers.conf"
cat >"$CONTAINERS_CONF" <<'EOF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "runc"
EOF

base=localhost/ometria-smoke-base:bookworm
rust=localhost/ometria-smoke-rust:local
image=localhost/ometria-importer:smoke

if ! podman image exists "$base"; then
  step "a bookworm base image from debootstrap (stands in for debian:bookworm-slim)"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log"
  # What official Debian images do so that no layer keeps the apt cache.
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
fi

if ! podman image exists "$rust"; then
  step "a Rust builder image (stands in for rust:slim): this machine's toolchain, mounted at build time"
  cp /etc/ssl/certs/ca-certificates.crt "$work/ca-certificates.crt"
  cat >"$work/Containerfile.rust" <<EOF
FROM $base
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates && rm -rf /var/lib/apt/lists/*
# This machine's certificate authorities, to fetch crates through its proxy.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PATH=/opt/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    CARGO_HOME=/usr/local/cargo
EOF
  podman build -q -t "$rust" -f "$work/Containerfile.rust" "$work" >/dev/null
fi

step "the image, from the project's Dockerfile"
# The docker format keeps the HEALTHCHECK (OCI images have none); no
# layer cache, so that each RUN's layer is not written twice to the disk.
podman build -q --format docker --layers=false -v "$(rustc --print sysroot)":/opt/rust:ro \
  --build-arg RUST_IMAGE="$rust" --build-arg RUNTIME_IMAGE="$base" -t "$image" . >/dev/null
podman run --rm "$image" version

step "the sandbox, from the same image"
port=$((20000 + $$ % 20000))
podman run -d --name "$sandbox" --network host "$image" sandbox --port "$port" --lists smoke:700 --ometria-rate 0 >/dev/null
http_get() { python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())' "$1"; }
for _ in $(seq 50); do http_get "http://127.0.0.1:$port/_sandbox/health" >/dev/null 2>&1 && break; sleep 0.2; done

step "the image syncs a list into a state volume"
mkdir -p "$work/state"
echo '[{"list_id": "smoke", "note": "mine"}]' >"$work/state/state.json"
metrics_port=$((port + 1))
podman run -d --name "$container" --network host \
  -v "$work/state:/opt/ometria/state:U" \
  -e MAILCHIMP_APIKEY=sandbox0mailchimp0key-us1 -e OMETRIA_APIKEY=sandbox-ometria-key \
  -e MAILCHIMP_BASE_URL="http://127.0.0.1:$port/3.0" -e OMETRIA_BASE_URL="http://127.0.0.1:$port" \
  -e IMPORTER_METRICS_ADDR="0.0.0.0:$metrics_port" "$image" >/dev/null
for _ in $(seq 150); do grep -q latest_timestamp "$work/state/state.json" && break; sleep 0.2; done
grep -q '"total_updates": 700' "$work/state/state.json" || {
  podman logs "$container"
  cat "$work/state/state.json"
  exit 1
}
podman healthcheck run "$container"
echo "HEALTHCHECK (ometria-importer health): healthy"
http_get "http://127.0.0.1:$port/_sandbox/verify" | grep -q '"ok": *true'
echo "the sandbox's Ometria holds exactly its Mailchimp data"

step "podman stop"
podman stop -t 10 "$container" >/dev/null
code=$(podman inspect -f '{{.State.ExitCode}}' "$container")
podman logs "$container" 2>&1 | tail -3
[ "$code" = 0 ] || { echo "exit code $code"; exit 1; }
podman logs "$container" 2>&1 | tail -1 | grep -q "controller: done."
python3 - "$work/state/state.json" <<'EOF'
import json, sys
state = json.load(open(sys.argv[1]))
assert len(state) == 1 and state[0]["note"] == "mine" and state[0]["total_updates"] == 700, state
assert isinstance(state[0]["latest_timestamp"], str)
EOF
echo "state file correct; exit code 0"

step "a state file mounted on its own, not its folder, stops the start"
echo '[{"list_id": "smoke"}]' >"$work/single.json"
code=0
out=$(podman run --rm --network host -v "$work/single.json:/opt/ometria/state/state.json:U" \
  -e MAILCHIMP_APIKEY=sandbox0mailchimp0key-us1 -e OMETRIA_APIKEY=sandbox-ometria-key \
  -e MAILCHIMP_BASE_URL="http://127.0.0.1:$port/3.0" -e OMETRIA_BASE_URL="http://127.0.0.1:$port" \
  "$image" once 2>&1) || code=$?
echo "$out" | tail -1
[ "$code" = 2 ] || { echo "exit code $code, expected 2"; exit 1; }
grep -q "is mounted on its own" <<<"$out"
step "docker smoke test passed"

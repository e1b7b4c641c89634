#!/usr/bin/env bash
# Builds rnnserve's container image and smoke-tests it, without a Docker engine (buildah and
# podman with chroot isolation, as root). CI runs it directly: `bash deploy/check-image.sh`.
#
#  1. Base image docker.io/library/debian:bookworm-slim, made once with debootstrap from the
#     machine's own Debian mirror (its apt sources) and `podman import`ed; reused while it exists.
#  2. `buildah bud --layers`: the apt layers are cached between runs and the compiler's ccache
#     lives in a buildah cache mount (/var/tmp/buildah-cache), so a rebuild after a source
#     change takes seconds. Cached layers of earlier sources are pruned (ours only, by label).
#  3. Runs the image's server twice on free loopback ports (chroot isolation shares the host's
#     network): with the image's default arguments and an empty /models (the demo model), then
#     with a model repository written by tools/export_pytorch.py mounted on /models, streamed
#     and compared with torch. Then SIGTERM: the server must drain and exit 0. Then once
#     with TLS and a bearer token (certificates from tests/server/auth/make_test_certs.sh and a
#     tokens file, mounted read-only): the smoke test connects over TLS with the token, checks
#     that plaintext and token-less calls are refused, and health on the plaintext
#     --health_port; the image's rnnserve-client connects with --tls_ca and --token_file.
#  4. Prints the image's size.
#
# Environment: RNNSERVE_IMAGE (default localhost/rnnserve:dev), RNNSERVE_DEBIAN_MIRROR (overrides
# the mirror read from the apt sources), RNNSERVE_REBUILD_BASE=1 (remake the base image),
# RNNSERVE_SKIP_BUILD=1 (smoke-test the image as it is).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
image="${RNNSERVE_IMAGE:-localhost/rnnserve:dev}"
base=docker.io/library/debian:bookworm-slim
suite=bookworm
python=/usr/bin/python3

log() { printf '[check-image %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FAIL: $*"; exit 1; }
now() { date +%s; }

[ "$(id -u)" -eq 0 ] || die "run as root (buildah and debootstrap need it here)"
for tool in buildah podman debootstrap openssl; do
  command -v "$tool" >/dev/null || die "$tool missing: scripts/install-deps.sh installs it"
done

work="$(mktemp -d /tmp/rnnserve-check-image.XXXXXX)"
containers=()
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then stop_server KILL || true; fi
  for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. base image --------------------------------------------------------------------------
# Prints "URI SUITE" for each Debian source of the machine (deb822 .sources, then one-line).
apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'function flush() { if (types ~ /(^| )deb( |$)/ && uris != "") { n = split(uris, u, " "); m = split(suites, s, " ");
                              for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] } types = uris = suites = "" }
         /^[[:space:]]*$/ { flush(); next }
         /^[[:space:]]*#/ { next }
         tolower($1) == "types:"  { $1 = ""; types = $0 }
         tolower($1) == "uris:"   { $1 = ""; uris = $0 }
         tolower($1) == "suites:" { $1 = ""; suites = $0 }
         END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -E -n 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+([^[:space:]]+).*/\2 \3/p' "$f"
  done
}

make_base() {
  local mirror security t0 rootfs
  mirror="${RNNSERVE_DEBIAN_MIRROR:-$(apt_sources | awk -v s="$suite" '$2 == s { print $1; exit }')}"
  security="$(apt_sources | awk -v s="$suite-security" '$2 == s { print $1; exit }')"
  [ -n "$mirror" ] || die "no '$suite' source in the machine's apt sources; set RNNSERVE_DEBIAN_MIRROR"
  log "debootstrap $suite from $mirror (security: ${security:-none})"
  rootfs="$work/rootfs"
  t0=$(now)
  debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  # Like the official -slim image: the same mirrors as this machine, no docs, no apt caches.
  {
    echo "deb $mirror $suite main"
    echo "deb $mirror $suite-updates main"
    if [ -n "$security" ]; then echo "deb $security $suite-security main"; fi
  } >"$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
CFG
  cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'CFG'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
CFG
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
         "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | podman import --quiet - "$base" >/dev/null
  log "base image $base made in $(( $(now) - t0 ))s"
}

if [ "${RNNSERVE_REBUILD_BASE:-0}" = 1 ] || ! podman image exists "$base"; then
  make_base
else
  log "base image $base exists (cached; RNNSERVE_REBUILD_BASE=1 remakes it)"
fi

# --- 2. image -------------------------------------------------------------------------------
build() {
  buildah bud --isolation chroot --pull=never --layers --force-rm "$@" . >>"$work/build.log" 2>&1 \
    || { tail -40 "$work/build.log"; die "image build failed"; }
}
if [ "${RNNSERVE_SKIP_BUILD:-0}" != 1 ]; then
  log "buildah bud -t $image"
  t0=$(now)
  # The builder stage gets a tag too, so that its layers (the build packages) are not dangling
  # and survive the prune below; the final image keeps its own.
  build --target build -t localhost/rnnserve-build:cache
  build -t "$image"
  grep -E '^(\[[0-9]/[0-9]\] STEP [0-9]+/[0-9]+: (RUN|COPY)|--> Using cache)' "$work/build.log" | cut -c1-100 | sed 's/^/    /' || true
  grep -E '^\s+(Hits|Misses):' "$work/build.log" | sed 's/^ */    ccache: /' || true
  log "image built in $(( $(now) - t0 ))s"
  # Layers of earlier builds (other sources) are dangling now: drop ours, by label.
  for title in rnnserve-build rnnserve; do
    podman image prune -f --filter "label=org.opencontainers.image.title=$title" >/dev/null
  done
fi

# --- 3. smoke test --------------------------------------------------------------------------
# The image's runtime config (buildah 1.28's --format has no json function: parse it here).
config_field() {
  buildah inspect --type image "$image" \
    | "$python" -c 'import json, sys; v = json.load(sys.stdin)["OCIv1"]["config"].get(sys.argv[1]); print(json.dumps(v) if isinstance(v, list) else (v or ""))' "$1"
}
entrypoint="$(config_field Entrypoint)"
default_args="$(config_field Cmd)"
user="$(config_field User)"
log "entrypoint $entrypoint, default args $default_args, user $user"
[ "$entrypoint" = '["rnnserve"]' ] || die "ENTRYPOINT should be [\"rnnserve\"]"
[ "$default_args" = '["--model_repository=/models"]' ] || die "default args should be --model_repository=/models"
case "$user" in ''|0|root|0:*|root:*) die "the image runs as root";; esac

# The processes below a pid (children first), by pid: buildah run's own helper and rnnserve.
descendants() {
  local child
  for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do descendants "$child"; echo "$child"; done
}
# start_server NAME [buildah run options...]: the image's entrypoint and default args, plus
# loopback ports and the server_args array, in a fresh working container, in the background.
server_args=()
start_server() {
  local name="$1"; shift
  local c
  c="$(buildah from --pull=never --name "rnnserve-check-$name-$$" "$image")"
  containers+=("$c")
  server_log="$work/$name.log"
  # Port 0: the server binds free ports itself and prints them, so parallel runs cannot race
  # for a port picked here and released before the server takes it.
  # shellcheck disable=SC2046
  buildah run --isolation chroot "$@" "$c" -- rnnserve $(echo "$default_args" | tr -d '[]"' | tr ',' ' ') \
    --host=127.0.0.1 --port=0 --metrics_port=0 ${server_args[@]+"${server_args[@]}"} >"$server_log" 2>&1 &
  server_pid=$!
  local line="" _
  for _ in $(seq 1 600); do  # bounded: 60 s
    line="$(grep -m1 '^rnnserve listening on ' "$server_log" || true)"
    [ -n "$line" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$line" ] || { tail -30 "$server_log"; die "server '$name' printed no listening line"; }
  # "rnnserve listening on 127.0.0.1:PORT (gRPC), metrics on 127.0.0.1:PORT"
  grpc_port="$(echo "$line" | sed -E 's/^rnnserve listening on [^ ]*:([0-9]+) .*/\1/')"
  metrics_port="$(echo "$line" | sed -E 's/.*metrics on [^ ]*:([0-9]+).*/\1/')"
  log "server '$name' (buildah run pid $server_pid) on 127.0.0.1:$grpc_port, metrics :$metrics_port"
}
# stop_server SIGNAL: signals rnnserve itself (not the buildah wrapper, which then exits and
# cleans up after itself) and waits, bounded; KILLs whatever is left after 30 s.
stop_server() {
  local sig="$1" pids p rc=0
  pids="$(descendants "$server_pid")"
  for p in $pids; do
    if [ "$(cat /proc/"$p"/comm 2>/dev/null)" = rnnserve ]; then kill -"$sig" "$p" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$server_pid" 2>/dev/null; then
    for p in $pids "$server_pid"; do kill -KILL "$p" 2>/dev/null || true; done
    rc=124
  fi
  wait "$server_pid" 2>/dev/null || rc=$?
  server_pid=""
  return "$rc"
}
smoke() {
  "$python" "$root/tests/deploy/smoke_image.py" --target "127.0.0.1:$grpc_port" \
    --metrics "http://127.0.0.1:$metrics_port/metrics" "$@" \
    || { echo "--- server log"; tail -30 "$server_log"; die "smoke test failed"; }
}

t0=$(now)
# a) default arguments, empty /models: the built-in demo model.
start_server demo
smoke --expect-models demo
# The image's CLI client, from a second working container (same host network).
client="$(buildah from --pull=never "$image")"
containers+=("$client")
buildah run --isolation chroot "$client" -- rnnserve-client --server "127.0.0.1:$grpc_port" models \
  >"$work/client.log" 2>&1 || { cat "$work/client.log"; die "rnnserve-client in the image failed"; }
grep -q demo "$work/client.log" || { cat "$work/client.log"; die "rnnserve-client models: no demo"; }
log "rnnserve-client in the image: ok"
stop_server TERM || { tail -30 "$server_log"; die "server did not exit 0 on SIGTERM"; }
log "demo server drained and exited 0 on SIGTERM"

# b) a model repository from tools/export_pytorch.py on /models, compared with torch.
mkdir -p "$work/models"
"$python" "$root/tests/deploy/smoke_image.py" --write-repository "$work/models"
chmod -R a+rX "$work/models"
start_server repository -v "$work/models:/models:ro"
smoke --expect-models "$(ls "$work/models" | paste -sd, -)" --repository "$work/models"
stop_server TERM || { tail -30 "$server_log"; die "server did not exit 0 on SIGTERM"; }

# c) TLS and a bearer token, as docs/security.md deploys it: certificates made now with openssl
# (ca1 signs server-a for 127.0.0.1), a tokens file with the token's SHA-256, both mounted
# read-only; gRPC over TLS only, health in plaintext on --health_port.
mkdir -p "$work/tls" "$work/auth"
bash "$root/tests/server/auth/make_test_certs.sh" "$work/tls" >/dev/null
token="$(openssl rand -hex 32)"
printf 'smoke %s\n' "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >"$work/auth/tokens"
printf '%s\n' "$token" >"$work/auth/token"
chmod -R a+rX "$work/tls" "$work/auth"  # the image's user (uid 10001) reads them
# A free loopback port for the health server (picked here, so a little racy; the server
# reports it if it cannot bind).
health_port="$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
server_args=(--tls_cert_file=/etc/rnnserve/tls/server-a.crt --tls_key_file=/etc/rnnserve/tls/server-a.key
             --auth_tokens_file=/etc/rnnserve/auth/tokens --health_port="$health_port")
start_server tls -v "$work/tls:/etc/rnnserve/tls:ro" -v "$work/auth:/etc/rnnserve/auth:ro"
server_args=()
smoke --expect-models demo --tls-ca "$work/tls/ca1.crt" --token "$token" \
  --health-target "127.0.0.1:$health_port"
grep -q "$token" "$server_log" && die "the token appears in the server's log"
client="$(buildah from --pull=never "$image")"
containers+=("$client")
buildah run --isolation chroot -v "$work/tls:/etc/rnnserve/tls:ro" -v "$work/auth:/etc/rnnserve/auth:ro" \
  "$client" -- rnnserve-client --server "127.0.0.1:$grpc_port" --tls_ca /etc/rnnserve/tls/ca1.crt \
  --token_file /etc/rnnserve/auth/token models >"$work/client.log" 2>&1 \
  || { cat "$work/client.log"; die "rnnserve-client with TLS and a token failed"; }
grep -q demo "$work/client.log" || { cat "$work/client.log"; die "rnnserve-client models over TLS: no demo"; }
log "TLS + token: smoke test and rnnserve-client in the image ok"
stop_server TERM || { tail -30 "$server_log"; die "TLS server did not exit 0 on SIGTERM"; }
log "smoke tests passed in $(( $(now) - t0 ))s"

# --- 4. size --------------------------------------------------------------------------------
size="$(podman image inspect --format '{{.Size}}' "$image")"
log "image $image: $(( size / 1000000 )) MB ($size bytes)"

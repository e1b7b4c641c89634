#!/usr/bin/env bash
# Generates the Python gRPC stubs for rnnserve.v1 (rnnserve/v1/rnn_service_pb2{,_grpc}.py).
#
#   client/python/gen_stubs.sh [OUT_DIR]
#
# OUT_DIR defaults to client/python/rnnserve_pb/<first 16 hex digits of the proto's sha256>
# (git-ignored), where rnnserve_client.py looks; a changed proto gets a fresh folder. The stubs
# are written to a temporary folder and renamed into place, so concurrent runs cannot leave a
# half-written folder; a run that finds OUT_DIR complete does nothing.
#
# Uses grpc's own plugin (/usr/bin/grpc_python_plugin) with protoc: Debian's grpc-tools Python
# package is too old for this proto.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
proto="$root/proto/rnnserve/v1/rnn_service.proto"
plugin="${GRPC_PYTHON_PLUGIN:-/usr/bin/grpc_python_plugin}"

if [ $# -ge 1 ]; then
  out="$1"
else
  out="$here/rnnserve_pb/$(sha256sum "$proto" | cut -c1-16)"
fi
if [ -f "$out/rnnserve/v1/rnn_service_pb2_grpc.py" ]; then
  exit 0
fi

parent="$(dirname "$out")"
mkdir -p "$parent"
tmp="$(mktemp -d "$parent/.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # mktemp makes it private
protoc --python_out="$tmp" --grpc_out="$tmp" --plugin=protoc-gen-grpc="$plugin" \
  -I "$root/proto" "$proto"
# rename(2) of a folder fails when the target exists: then another run won the race with the
# same stubs, and ours is dropped by the trap.
mv -T "$tmp" "$out" 2>/dev/null || true

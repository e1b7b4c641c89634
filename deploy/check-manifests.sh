#!/usr/bin/env bash
# Offline checks of the deployment files: yamllint over deploy/ (config deploy/.yamllint), then
# the Kubernetes manifests against the API schema and each other (deploy/validate-manifests.js,
# npm package kubernetes-models from tools/node), then nginx's own syntax check of the router
# config. Every tool is required: a missing one fails the check, naming it (it never passes
# having checked less). ctest runs it (label deploy).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
python="${RNNSERVE_PYTHON:-/usr/bin/python3}"

missing=()
need() {  # need TOOL HINT
  command -v "$1" >/dev/null 2>&1 || missing+=("$1 is missing (install: $2)")
}
need yamllint "apt-get install yamllint"
need node "apt-get install nodejs"
need nginx "apt-get install nginx-core"
[ -d tools/node/node_modules/kubernetes-models ] ||
  missing+=("tools/node/node_modules/kubernetes-models is missing (install: bash scripts/install-deps.sh)")
[ -x "$python" ] || missing+=("$python is missing (set RNNSERVE_PYTHON)")
if [ ${#missing[@]} -gt 0 ]; then
  printf 'check-manifests: FAILED: %s\n' "${missing[@]}" >&2
  exit 1
fi

echo "check-manifests: yamllint"
yamllint --strict -c deploy/.yamllint deploy

echo "check-manifests: schema and references"
node deploy/validate-manifests.js deploy/kubernetes

echo "check-manifests: nginx -t on the router config (as tests/deploy/test_replicas.py runs it)"
"$python" tests/deploy/deploy_harness.py --nginx-test deploy/kubernetes/nginx.conf
echo "check-manifests: OK"

#!/usr/bin/env bash
# Offline checks of the deployment files: yamllint over deploy/ (config deploy/.yamllint), then
# the Kubernetes manifests against the API schema and each other (deploy/validate-manifests.js,
# npm package kubernetes-models from tools/node), then nginx's own syntax check of the router
# config when nginx is installed. ctest runs it (label deploy).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

echo "check-manifests: yamllint"
yamllint --strict -c deploy/.yamllint deploy

echo "check-manifests: schema and references"
node deploy/validate-manifests.js deploy/kubernetes

if command -v nginx >/dev/null 2>&1; then
  echo "check-manifests: nginx -t on the router config (as tests/deploy/test_replicas.py runs it)"
  /usr/bin/python3 tests/deploy/deploy_harness.py --nginx-test deploy/kubernetes/nginx.conf
fi
echo "check-manifests: OK"

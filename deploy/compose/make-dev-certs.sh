#!/usr/bin/env bash
# Development credentials for deploy/compose (never for production: the keys are made
# world-readable so that the container's user, uid 10001, can read the bind mount):
#
#   bash deploy/compose/make-dev-certs.sh [--force]
#
#   certs/ca.crt, ca.key     a private CA, valid 30 days
#   certs/tls.crt, tls.key   the server: DNS localhost and rnnserve, IP 127.0.0.1 (--tls_cert_file,
#                            --tls_key_file); clients trust certs/ca.crt (--tls_ca / tls_ca=)
#   certs/client.crt, .key   a client certificate from the same CA, for trying mTLS
#                            (add --tls_client_ca_file=/etc/rnnserve/tls/ca.crt to the server)
#   auth/tokens              the tokens file: `dev SHA256HEX` (--auth_tokens_file)
#   auth/dev.token           the matching token, for clients (--token_file / token=)
#
# Existing files are kept unless --force. Then:
#   docker compose -f deploy/compose/docker-compose.yaml up --build
#   rnnserve-client --server localhost:50051 --tls_ca deploy/compose/certs/ca.crt \
#     --token_file deploy/compose/auth/dev.token models
set -euo pipefail
cd "$(dirname "$0")"
if [ -e certs/tls.crt ] && [ "${1:-}" != --force ]; then
  echo "make-dev-certs: certs/ exists (--force remakes it)"
  exit 0
fi
command -v openssl >/dev/null || { echo "make-dev-certs: openssl is missing" >&2; exit 1; }
mkdir -p certs auth
days=30

key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
key certs/ca.key
openssl req -x509 -new -key certs/ca.key -subj "/O=rnnserve-dev/CN=rnnserve dev CA" -days "$days" \
  -sha256 -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out certs/ca.crt

# leaf NAME SUBJECT EXTENSIONS
leaf() {
  key "certs/$1.key"
  openssl req -new -key "certs/$1.key" -subj "$2" -out "certs/$1.csr"
  printf '%b' "$3" >"certs/$1.ext"
  openssl x509 -req -in "certs/$1.csr" -CA certs/ca.crt -CAkey certs/ca.key -CAcreateserial \
    -days "$days" -sha256 -extfile "certs/$1.ext" -out "certs/$1.crt" 2>/dev/null
  rm -f "certs/$1.csr" "certs/$1.ext"
}
leaf tls "/O=rnnserve-dev/CN=rnnserve" \
  'subjectAltName=DNS:localhost,DNS:rnnserve,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n'
leaf client "/O=rnnserve-dev/CN=dev-client" 'extendedKeyUsage=clientAuth\n'
rm -f certs/ca.srl
chmod 0644 certs/*.crt certs/tls.key certs/client.key  # dev only: the container's uid reads them
chmod 0600 certs/ca.key

token="$(openssl rand -hex 32)"
printf '%s\n' "$token" >auth/dev.token
chmod 0600 auth/dev.token
printf '# made by make-dev-certs.sh: PRINCIPAL SHA256(token)\ndev %s\n' \
  "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >auth/tokens
chmod 0644 auth/tokens
echo "make-dev-certs: certs/ (CA, server, client) and auth/ (tokens file, dev.token) in $(pwd)"

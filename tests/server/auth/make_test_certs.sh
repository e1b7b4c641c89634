#!/usr/bin/env bash
# Makes the certificates tls_test needs, in the folder given as $1 (EC P-256, valid 2 days):
#   ca1, ca2               self-signed CAs
#   server-a, server-b     server certificates from ca1 for 127.0.0.1 and localhost
#   client1                client certificate from ca1 (accepted by a server trusting ca1)
#   client2                client certificate from ca2 (refused by that server)
# Each NAME has NAME.key and NAME.crt; leaf subjects are "/O=rnnserve-test/CN=NAME".
set -euo pipefail
cd "$1"

new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1.key" 2>/dev/null; }

make_ca() {
  new_key "$1"
  openssl req -x509 -new -key "$1.key" -subj "/O=rnnserve-test/CN=$1" -days 2 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.crt"
}

# make_leaf NAME CA EXTENSIONS
make_leaf() {
  new_key "$1"
  openssl req -new -key "$1.key" -subj "/O=rnnserve-test/CN=$1" -out "$1.csr"
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days 2 \
    -sha256 -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

server_ext='subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n'
client_ext='extendedKeyUsage=clientAuth\n'
make_ca ca1
make_ca ca2
make_leaf server-a ca1 "$server_ext"
make_leaf server-b ca1 "$server_ext"
make_leaf client1 ca1 "$client_ext"
make_leaf client2 ca2 "$client_ext"

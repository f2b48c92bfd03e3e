#!/usr/bin/env bash
# Generates a throw-away CA and one certificate per node for trying TLS (docs/security.md):
#   scripts/gen-test-ca.sh [DIR] [NODE...]        default: ./certs n1 n2 n3
# Each node certificate is valid for the node's name, localhost, 127.0.0.1 and ::1, as a
# server and as a client (mutual TLS on Raft). Add the names your nodes advertise with
# SANS="DNS:txcoord-0.txcoord,IP:10.0.0.5". NOT for production: the CA key sits next to
# the certificates, unencrypted.
set -euo pipefail
dir=${1:-certs}; shift || true
nodes=("$@"); [ ${#nodes[@]} -gt 0 ] || nodes=(n1 n2 n3)
command -v openssl >/dev/null || { echo "openssl is needed (apt-get install -y openssl)"; exit 1; }
mkdir -p "$dir" && cd "$dir"
umask 077
if [ ! -f ca.pem ]; then
  openssl ecparam -name prime256v1 -genkey -noout -out ca-key.pem
  openssl req -x509 -new -key ca-key.pem -sha256 -days 30 -subj "/CN=txcoord test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
fi
for n in "${nodes[@]}"; do
  openssl ecparam -name prime256v1 -genkey -noout -out "$n-key.pem"
  openssl req -new -key "$n-key.pem" -subj "/CN=$n" -out "$n.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s,DNS:localhost,IP:127.0.0.1,IP:::1%s\n' \
    "$n" "${SANS:+,$SANS}" > "$n.ext"
  openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 -extfile "$n.ext" -out "$n.pem" 2>/dev/null
  rm -f "$n.csr" "$n.ext"
done
echo "CA: $dir/ca.pem; nodes: ${nodes[*]} ($dir/<node>.pem, $dir/<node>-key.pem)"

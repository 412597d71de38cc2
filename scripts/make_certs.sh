#!/usr/bin/env bash
# Development certificates: a local certificate authority and a certificate for localhost signed
# by it, written with openssl.
#
#   scripts/make_certs.sh [DIR] [NAME...]
#
# DIR defaults to ./ssl; NAMEs are extra DNS names or IP addresses for the certificate (besides
# localhost, 127.0.0.1 and ::1). Writes:
#   DIR/ca.pem        the local CA certificate: trust it in clients (curl --cacert, browsers,
#                     Deno.createHttpClient({ caCerts }), deno run --cert DIR/ca.pem)
#   DIR/ca-key.pem    the CA's key (mode 0600); keep it private or delete it
#   DIR/cert.pem      the server certificate followed by the CA (the full chain)
#   DIR/key.pem       the server key (mode 0600)
# Existing files are replaced. Keys are ECDSA P-256: quick to make and to handshake with.
set -euo pipefail

dir=${1:-./ssl}
shift || true
days=${DAYS:-825}

command -v openssl >/dev/null || { echo "make_certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$dir"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

openssl ecparam -name prime256v1 -genkey -noout -out "$work/ca-key.pem" 2>/dev/null
openssl req -x509 -new -key "$work/ca-key.pem" -sha256 -days "$days" \
  -subj "/O=denoserve development/CN=denoserve local CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$work/ca.pem"

openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.ec.pem" 2>/dev/null
openssl pkcs8 -topk8 -nocrypt -in "$work/key.ec.pem" -out "$work/key.pem"
openssl req -new -key "$work/key.pem" -subj "/CN=localhost" -out "$work/leaf.csr"
cat >"$work/leaf.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=$san
EXT
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
  -CAcreateserial -sha256 -days "$days" -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null
cat "$work/leaf.pem" "$work/ca.pem" >"$work/cert.pem"

install -m 0644 "$work/ca.pem" "$dir/ca.pem"
install -m 0600 "$work/ca-key.pem" "$dir/ca-key.pem"
install -m 0644 "$work/cert.pem" "$dir/cert.pem"
install -m 0600 "$work/key.pem" "$dir/key.pem"

echo "wrote $dir/cert.pem and $dir/key.pem (localhost, SANs ${san//,/, }), signed by $dir/ca.pem"
echo "serve:  deno task start --ssl --cert $dir/cert.pem --key $dir/key.pem"
echo "trust:  curl --cacert $dir/ca.pem https://localhost:8000/"

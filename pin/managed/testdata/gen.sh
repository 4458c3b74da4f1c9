#!/bin/sh
# Regenerates the managed-mode vectors in this directory without tether:
# the server certificate and every hash by OpenSSL 3.0, the enrolment
# token by coreutils, the exchange key and the JWE by José (jose 11,
# Debian 12). The certificate, the exchange key and the JWE's epk and IV
# change from run to run; the token's secret is fixed below.
#   sh gen.sh
# Nothing here is secret: the keys exist only to test with.
set -eu
cd "$(dirname "$0")"
b64url() { basenc --base64url -w0 | tr -d '='; }

# The server's TLS certificate (its key is thrown away) and its pin:
# base64url(SHA-256(SubjectPublicKeyInfo DER)).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key.tmp \
	-out server.pem -subj /CN=tether-vectors -days 36500 2>/dev/null
rm -f server.key.tmp
openssl x509 -in server.pem -pubkey -noout | openssl pkey -pubin -outform DER |
	openssl dgst -sha256 -binary > pin.tmp
b64url < pin.tmp > pin.txt

# Enrolment token: base64url(secret[32] || SHA-256(server SPKI)[32]); the
# server stores only SHA-256(secret).
secret=0b7e2f5c9d1a4e8b3c6f0a2d5e8b1c4f7a0d3e6b9c2f5a8d1e4b7c0a3f6e9d2c
printf '%s\n' "$secret" > token-secret.hex
{ printf '%s' "$secret" | xxd -r -p; cat pin.tmp; } | b64url > token.txt
rm -f pin.tmp
printf '%s' "$secret" | xxd -r -p | openssl dgst -sha256 -binary | xxd -p -c 64 > token-stored.hex

# The device's exchange key s_D as the server makes it (P-256, ECMR,
# deriveKey) and a JWE bound to it as the managed pin binds: ECDH-ES,
# A256GCM, kid = S256 thumbprint, clevis.managed naming server and device.
jose jwk gen -i '{"alg":"ECMR","crv":"P-256"}' -o exchange.jwk
pub=$(jose jwk pub -i exchange.jwk)
printf '%s' "$pub" | jq -c 'del(.alg,.key_ops)' > enc.tmp
kid=$(jose jwk thp -i enc.tmp -a S256)
printf 'a tether secret\n' > secret.txt
jose jwe enc -i '{"protected":{"alg":"ECDH-ES","enc":"A256GCM","kid":"'"$kid"'","clevis":{"pin":"managed","managed":{"url":"https://tether.example:7501","pin":"'"$(cat pin.txt)"'","device":"dev-0f3a9c2e","key":'"$pub"'}}}}' \
	-k enc.tmp -I secret.txt -c -o managed.jwe
echo >> managed.jwe
rm -f enc.tmp

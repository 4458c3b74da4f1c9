#!/bin/sh
# Regenerates the https pin vectors in this directory without tether:
# the key by OpenSSL's HKDF (openssl kdf, OpenSSL 3.0), the JWE by José
# (jose 11, Debian 12), from the fixed material and salt below. Only the
# JWE's IV (and so its ciphertext and tag) changes from run to run.
#   sh gen.sh
# Nothing here is secret: the material exists only to test with.
set -eu
cd "$(dirname "$0")"
b64url() { basenc --base64url -w0 | tr -d '='; }

material=b1240dab4d54d6e1e49738486d53bf7df5a4600a8da92b2e5df0a323489c02a4
salt=bc4ad191b99b0a961956eb578a3c38bf889a5cf1d56b545a939d55b8b2cd32d5
printf '%s' "$material" | xxd -r -p > material.bin
printf 'a tether secret\n' > secret.txt

# key = HKDF-SHA256(material, salt, "tether https pin v1"), 32 bytes.
key=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "hexkey:$material" \
	-kdfopt "hexsalt:$salt" -kdfopt 'info:tether https pin v1' HKDF | tr -d ':')
printf '{"kty":"oct","k":"%s"}\n' "$(printf '%s' "$key" | xxd -r -p | b64url)" > key.jwk

# The header as the pin writes it with a bearer token stored in the clear
# (allow_plain_credentials).
# The audience the token would be sealed for if it were protected: URL,
# pin and the hash of the (here empty) CA.
ca=$(printf '' | openssl dgst -sha256 -binary | base64 -w0)
printf '{"url":"https://keys.example:8443/disk-1.key","pin_sha256":"ik1SO+u8bQg9QnMqTWdm5V5JkvCyqps3xpMyNzhYKpA=","ca_sha256":"%s"}' "$ca" > audience.json

salt64=$(printf '%s' "$salt" | xxd -r -p | b64url)
clevis='{"pin":"https","https":{"url":"https://keys.example:8443/disk-1.key","pin_sha256":"ik1SO+u8bQg9QnMqTWdm5V5JkvCyqps3xpMyNzhYKpA=","salt":"'$salt64'","attempts":5,"cred":{"token":"bearer-token-for-vectors"}}}'
jose jwe enc -i '{"protected":{"alg":"dir","enc":"A256GCM","clevis":'"$clevis"'}}' \
	-k key.jwk -I secret.txt -c -o https.jwe
echo >> https.jwe

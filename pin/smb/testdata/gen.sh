#!/bin/sh
# Regenerates the smb pin vectors in this directory without tether: the
# key by OpenSSL's HKDF (openssl kdf, OpenSSL 3.0), the JWEs and the
# protecting key by José (jose 11, Debian 12), from the fixed material and
# salt below. The JWEs' IVs and the protecting key change from run to run.
#   sh gen.sh
# Nothing here is secret: the material and keys exist only to test with.
set -eu
cd "$(dirname "$0")"
b64url() { basenc --base64url -w0 | tr -d '='; }

material=7c78019ac316dadcd02e4d88263843329a79953d8e3a652a3ffd27592cfeab9d
salt=2a65b8c61752624b75ebe8f84ba8a07c79411ca4b0cf3deff399f1e969fbd3fb
printf '%s' "$material" | xxd -r -p > material.bin
printf 'a tether secret\n' > secret.txt

# key = HKDF-SHA256(material, salt, "tether smb pin v1"), 32 bytes.
key=$(openssl kdf -keylen 32 -kdfopt digest:SHA256 -kdfopt "hexkey:$material" \
	-kdfopt "hexsalt:$salt" -kdfopt 'info:tether smb pin v1' HKDF | tr -d ':')
printf '{"kty":"oct","k":"%s"}\n' "$(printf '%s' "$key" | xxd -r -p | b64url)" > key.jwk

# The password, sealed for its audience (server, port, share, user,
# domain: the member order and spelling of docs/REMOTE-PINS.md), protected
# by a tang-style JWE (ECDH-ES to the P-256 exchange key protect.jwk).
aud='{"server":"nas.example","port":445,"share":"keys","user":"disk1","domain":"WORKGROUP"}'
printf '%s' "$aud" > audience.json
jose jwk gen -i '{"alg":"ECMR","crv":"P-256"}' -o protect.jwk
jose jwk pub -i protect.jwk | jq -c 'del(.alg,.key_ops)' > protect-enc.tmp
kid=$(jose jwk thp -i protect-enc.tmp -a S256)
jq -cn --arg aud "$aud" '{password:"smb-password-for-vectors",aud:$aud}' > cred.tmp
jose jwe enc -i '{"protected":{"alg":"ECDH-ES","enc":"A256GCM","kid":"'"$kid"'","clevis":{"pin":"tang","tang":{"url":"http://tang.invalid"}}}}' \
	-k protect-enc.tmp -I cred.tmp -c -o cred.jwe.tmp
credjwe=$(cat cred.jwe.tmp)
rm -f protect-enc.tmp cred.tmp cred.jwe.tmp

salt64=$(printf '%s' "$salt" | xxd -r -p | b64url)
clevis='{"pin":"smb","smb":{"server":"nas.example","port":445,"share":"keys","path":"tether\\disk1.key","user":"disk1","domain":"WORKGROUP","salt":"'$salt64'","attempts":4,"cred_jwe":"'$credjwe'"}}'
jose jwe enc -i '{"protected":{"alg":"dir","enc":"A256GCM","clevis":'"$clevis"'}}' \
	-k key.jwk -I secret.txt -c -o smb.jwe
echo >> smb.jwe

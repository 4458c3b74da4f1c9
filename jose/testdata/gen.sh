#!/bin/sh
# Regenerates the vectors in this directory with the real jose(1) tool
# (Debian 12 package "jose", libjose 11). Run it from this directory:
#   sh gen.sh
set -eu
for alg in ES256 ES384 ES512; do
	jose jwk gen -i "{\"alg\":\"$alg\"}" -o "key-$alg.jwk"
done
# Thumbprints: one line "FILE HASH THUMBPRINT" per key and hash.
: > thumbprints.txt
for f in key-*.jwk; do
	for a in S1 S224 S256 S384 S512; do
		echo "$f $a $(jose jwk thp -i "$f" -a "$a")" >> thumbprints.txt
	done
done
# ECDH-ES + A256GCM JWEs made by jose(1) for known keys: decrypting them
# exercises the Concat KDF and the AAD handling.
printf 'the quick brown fox; a LUKS passphrase' > ecdh-es.plaintext
for crv in P-256 P-384 P-521; do
	jose jwk gen -i "{\"kty\":\"EC\",\"crv\":\"$crv\"}" -o "ecdh-es-$crv.jwk"
	jose jwe enc -i '{"protected":{"alg":"ECDH-ES","enc":"A256GCM"}}' -I ecdh-es.plaintext -k "ecdh-es-$crv.jwk" -o "ecdh-es-$crv.jwe" -c
done
# Advertisements (JWS) the way tangd makes them: flattened JSON with one
# signer, general JSON with two.
jose jwk gen -i '{"alg":"ECMR","crv":"P-521"}' -o adv-exc.jwk
jose jwk gen -i '{"alg":"ES512"}' -o adv-sig1.jwk
jose jwk gen -i '{"alg":"ES512"}' -o adv-sig2.jwk
printf '{"keys":[%s,%s]}' "$(jose jwk pub -i adv-sig1.jwk)" "$(jose jwk pub -i adv-exc.jwk)" > adv-payload1.json
printf '{"keys":[%s,%s,%s]}' "$(jose jwk pub -i adv-sig1.jwk)" "$(jose jwk pub -i adv-sig2.jwk)" \
	"$(jose jwk pub -i adv-exc.jwk)" > adv-payload2.json
sig='{"protected":{"cty":"jwk-set+json"}}'
jose jws sig -I adv-payload1.json -s "$sig" -k adv-sig1.jwk -o adv-flattened.jws
jose jws sig -I adv-payload2.json -s "$sig" -k adv-sig1.jwk -s "$sig" -k adv-sig2.jwk -o adv-general.jws
# Negative: the key set lists two verify keys but only one signed.
jose jws sig -I adv-payload2.json -s "$sig" -k adv-sig1.jwk -o adv-missing-signature.jws

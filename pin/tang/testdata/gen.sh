#!/bin/sh
# Regenerates the clevis-made vectors in this directory with the real
# tang, jose and clevis tools (Debian 12: tang 11, jose 11, clevis 19).
# Run it from this directory as root (tangd-keygen chowns to _tang):
#   sh gen.sh
# Nothing here is secret: the keys exist only to test with.
set -eu
rm -rf keys keys-p256 ./*.jwe ./*.jws
printf 'a clevis secret\n' > secret.txt

# adv KEYDIR OUT: sign the visible keys of KEYDIR the way tangd does.
adv() {
	set --  "$1" "$2" "$(ls "$1"/*.jwk)"
	pubs=""
	for k in $3; do pubs="$pubs${pubs:+,}$(jose jwk pub -i "$k")"; done
	printf '{"keys":[%s]}' "$pubs" > payload.tmp
	sigs=""
	for k in $3; do
		if grep -q '"sign"' "$k"; then
			sigs="$sigs -s {\"protected\":{\"cty\":\"jwk-set+json\"}} -k $k"
		fi
	done
	# shellcheck disable=SC2086
	jose jws sig -I payload.tmp $sigs -o "$2"
	rm -f payload.tmp
}

# P-521 keys by tangd-keygen; bind, then rotate with tangd-rotate-keys and
# bind again: old.jwe needs the hidden (rotated) exchange key.
mkdir keys
/usr/libexec/tangd-keygen keys
adv keys adv-old.jws
clevis encrypt tang '{"url":"http://tang.invalid","adv":"adv-old.jws"}' < secret.txt > old.jwe
/usr/libexec/tangd-rotate-keys -d keys
adv keys adv.jws
clevis encrypt tang '{"url":"http://tang.invalid","adv":"adv.jws"}' < secret.txt > new.jwe

# sss, t=2 of 3 tang children on three loopback addresses (the sss test
# in pin/sss listens on them) for the same keys.
clevis encrypt sss '{"t":2,"pins":{"tang":[{"url":"http://127.84.1.1:7500","adv":"adv.jws"},{"url":"http://127.84.1.2:7500","adv":"adv.jws"},{"url":"http://127.84.1.3:7500","adv":"adv.jws"}]}}' < secret.txt > sss.jwe

# P-256 keys made with jose: clevis takes the curve from the advertisement.
mkdir keys-p256
jose jwk gen -i '{"alg":"ES256"}' -o keys-p256/sig.jwk
jose jwk gen -i '{"alg":"ECMR","crv":"P-256"}' -o keys-p256/exc.jwk
adv keys-p256 adv-p256.jws
clevis encrypt tang '{"url":"http://tang.invalid","adv":"adv-p256.jws"}' < secret.txt > p256.jwe
chmod 755 keys keys-p256
chmod 644 keys/*.jwk keys/.*.jwk keys-p256/*.jwk

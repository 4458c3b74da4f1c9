#!/bin/sh
# Regenerates the token vectors in this directory: the token JSON is
# written here by hand from docs/LUKS.md (not by tether), the JWEs are the
# https pin's José-made vector and clevis's tang vector, and the real
# cryptsetup (2.6.1, Debian 12) stores every token in a LUKS2 header,
# whose metadata part is kept. Run as root (cryptsetup), from anywhere:
#   sh gen.sh
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
uuid=3c1d7e52-9a4b-4f0e-8d6c-2b5a7f913e08

# flat COMPACT: the flattened serialization, members in the order tether,
# clevis and José write them (sorted).
flat() {
	IFS=. read -r p ek iv ct tag <<JWE
$1
JWE
	printf '{"ciphertext":"%s","encrypted_key":"%s","iv":"%s","protected":"%s","tag":"%s"}' "$ct" "$ek" "$iv" "$p" "$tag"
}
https=$(tr -d '\n' < ../../../pin/https/testdata/https.jwe)
tang=$(tr -d '\n' < ../../../pin/tang/testdata/new.jwe)

# A pin clevis does not know (https) gets a "tether" token; one it knows
# (tang) a "clevis" token. Same layout.
printf '{"type":"tether","keyslots":["2"],"jwe":%s}' "$(flat "$https")" > tether.json
printf '{"type":"clevis","keyslots":["1"],"jwe":%s}' "$(flat "$tang")" > clevis.json
# The three tether-txn tokens, as bind, regen and unbind write them.
printf '{"type":"tether-txn","keyslots":[],"op":"bind","slot":"3","backup":"/var/lib/tether/luks/%s-20260102T030405.000000006.header"}' "$uuid" > txn-bind.json
printf '{"type":"tether-txn","keyslots":[],"op":"regen","slot":"4","old_slot":"1","old_token":"0","backup":"/var/lib/tether/luks/%s-20260102T030405.000000007.header"}' "$uuid" > txn-regen.json
printf '{"type":"tether-txn","keyslots":[],"op":"unbind","slot":"2"}' > txn-unbind.json

# A LUKS2 image with keyslots 0 (passphrase "test"), 1 and 2 (PBKDF2, so
# quick), holding every token above; txn tokens name slots only in
# their own members, which cryptsetup does not check.
truncate -s 20M "$t/img"
printf test | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
	--pbkdf-force-iterations 1000 --uuid "$uuid" --key-file - "$t/img"
for s in 1 2; do
	printf test | cryptsetup luksAddKey --batch-mode --key-slot 0 --new-key-slot $s \
		--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --key-file - --new-keyfile /dev/fd/3 "$t/img" 3<<K
slot$s
K
done
id=0
for f in clevis.json tether.json txn-bind.json txn-regen.json txn-unbind.json; do
	cryptsetup token import --token-id $id --json-file $f "$t/img"
	id=$((id + 1))
done
cryptsetup luksHeaderBackup "$t/img" --header-backup-file "$t/hdr"
head -c 32768 "$t/hdr" > header.bin

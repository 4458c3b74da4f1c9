#!/bin/bash
# Makes the JSON metadata of two states of an unfinished cryptsetup
# reencrypt --encrypt (cryptsetup 2.6.1), which seed TestFinishedEncryptionJSON
# and FuzzFinishedEncryptionJSON:
#   encrypt-init-only.json   after --init-only: the header is written, the
#                            first 16 MiB copied to the end, nothing
#                            encrypted (every data segment is linear)
#   encrypt-final-step.json  killed after its last chunk, before the final
#                            metadata update, which 2.6.1 cannot resume
# Run as root in this directory.
set -eu
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
printf 'tempkey' > "$t/k"
truncate -s 64M "$t/a.img"
mkfs.ext4 -q -F "$t/a.img" 32M
(cd "$t" && cryptsetup reencrypt --encrypt --init-only --type luks2 --reduce-device-size 32M \
	--key-file k --pbkdf pbkdf2 --pbkdf-force-iterations 1000 a.img)
cryptsetup luksDump --dump-json-metadata "$t/a.img" > encrypt-init-only.json
# Kill at random moments until a run stops in the final step (about one
# run in six here).
for i in $(seq 1 200); do
	rm -f "$t/b.img"; truncate -s 48M "$t/b.img"; mkfs.ext4 -q -F "$t/b.img" 16M
	(cd "$t" && exec cryptsetup reencrypt --encrypt --type luks2 --reduce-device-size 32M \
		--key-file k --pbkdf pbkdf2 --pbkdf-force-iterations 1000 b.img >/dev/null 2>&1) &
	p=$!
	sleep 0.$(printf %03d $((RANDOM % 700)))
	kill -9 $p 2>/dev/null || true
	wait $p 2>/dev/null || true
	cryptsetup luksDump --dump-json-metadata "$t/b.img" > "$t/b.json" 2>/dev/null || continue
	if cryptsetup reencrypt --resume-only --force-offline-reencrypt --key-file "$t/k" "$t/b.img" 2>&1 |
		grep -q "Failed to set device segments"; then
		mv "$t/b.json" encrypt-final-step.json
		exit 0
	fi
done
echo "the final step was not caught" >&2
exit 1

#!/bin/sh
# Regenerates the header test vectors in this directory with the real
# cryptsetup (made with cryptsetup 2.6.1, Debian 12). Only the metadata
# part of each header is kept: the keyslot area (key material) is not
# needed by the parser and would only bloat the repository.
set -eu
cd "$(dirname "$0")"
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT

# LUKS2: a pbkdf2 slot 0 ("test"), an argon2id slot 2 ("test2"), a
# clevis-style token for slot 2 and a foreign token.
truncate -s 20M "$t/img"
printf test | cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 \
	--pbkdf-force-iterations 1000 --uuid 0b9f8a5e-7e0c-4a8c-9a4e-6d2b1c3e4f50 \
	--label tether-test --key-file - "$t/img"
printf test | cryptsetup luksAddKey --batch-mode --key-slot 0 --new-key-slot 2 \
	--pbkdf argon2id --pbkdf-force-iterations 4 --pbkdf-memory 32 --pbkdf-parallel 1 \
	--key-file - --new-keyfile /dev/fd/3 "$t/img" 3<<K
test2
K
printf '{"type":"clevis","keyslots":["2"],"jwe":{"protected":"e30","encrypted_key":"","iv":"","ciphertext":"","tag":""}}' |
	cryptsetup token import --token-id 0 --json-file - "$t/img"
printf '{"type":"example-foreign","keyslots":[],"note":"not ours"}' |
	cryptsetup token import --token-id 5 --json-file - "$t/img"
cryptsetup luksHeaderBackup "$t/img" --header-backup-file "$t/hdr"
head -c 32768 "$t/hdr" > luks2-header.bin

# LUKS1: the binary header is enough to recognise it.
truncate -s 20M "$t/img1"
printf test | cryptsetup luksFormat --batch-mode --type luks1 --pbkdf-force-iterations 1000 \
	--key-file - "$t/img1"
head -c 4096 "$t/img1" > luks1-header.bin

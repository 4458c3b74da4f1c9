#!/bin/sh
# Writes chain.jsonl and chain.sha256: four audit records in canonical form,
# each chained to the one before, hashed by sha256sum rather than by
# package audit, so that the vectors check the Go code against an
# independent reading of docs/MANAGED.md ("Audit record hash").
# Run from audit/testdata: sh mkvectors.sh
set -eu
prev=0000000000000000000000000000000000000000000000000000000000000000
: > chain.jsonl
: > chain.sha256
add() { # seq time device action source decision reason actor (reason and all JSON-escaped already)
	line=$(printf '{"seq":%s,"time":%s,"device":"%s","action":"%s","source":"%s","decision":"%s","reason":"%s","actor":"%s","prev":"%s"}' \
		"$1" "$2" "$3" "$4" "$5" "$6" "$7" "$8" "$prev")
	printf '%s\n' "$line" >> chain.jsonl
	prev=$(printf '%s' "$line" | sha256sum | cut -d' ' -f1)
	printf '%s\n' "$prev" >> chain.sha256
}
# 2026-01-02T03:04:05.000000006Z and later; a record without a device or
# source has them as empty strings, not absent.
add 1 1767323045000000006 dev-1 enroll 192.0.2.7 allow '' ''
# Go's encoding/json escapes <, > and & as \u003c, \u003e, \u0026: the
# canonical form does too.
add 2 1767323105000000000 dev-1 unlock 198.51.100.1 deny 'source 198.51.100.1 not in \u003c10.0.0.0/8\u003e \u0026 \"servers\"' ''
# Other non-ASCII text is plain UTF-8.
add 3 1767323165123456789 dev-1 device.revoke '' ok 'laptop stolen — ünïcode' admin
add 4 1767326645000000000 '' lockdown '' ok '' admin

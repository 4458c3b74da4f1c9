#!/usr/bin/env bash
# tether decrypt before and after a change, side by side with clevis decrypt
# and bench/floor, against a stock tangd under socket activation: the runs of
# all four alternate (bench/alternate), so that all see the same machine.
#
#   bench/ab-decrypt.sh REV     REV: the git revision to compare the work tree with
#   N=80 BATCHES=5 bench/ab-decrypt.sh REV
#
# Prints each batch's medians and ratios to clevis decrypt. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/ab-decrypt.sh REV}
export PATH="/usr/local/go/bin:$PATH"
w=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$w"; }
trap cleanup EXIT

mkdir "$w/old"; git archive "$rev" | tar -x -C "$w/old"
(cd "$w/old" && CGO_ENABLED=0 go build -o "$w/tether-old" ./cmd/tether)
CGO_ENABLED=0 go build -o "$w/tether-new" ./cmd/tether
CGO_ENABLED=0 go build -o "$w/floor" ./bench/floor
go build -o "$w/alternate" ./bench/alternate

mkdir "$w/tang"; /usr/libexec/tangd-keygen "$w/tang"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
systemd-socket-activate --inetd -a -l "127.0.0.1:$port" /usr/libexec/tangd "$w/tang" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/adv" >/dev/null && break; sleep 0.1; done
echo secret | "$w/tether-new" encrypt tang "{\"url\":\"http://127.0.0.1:$port\"}" -y > "$w/t.jwe"
for k in "$w"/tang/*.jwk; do jq -e '.key_ops | index("deriveKey")' "$k" >/dev/null && xkey=$k; done
jose jwk pub -i "$xkey" | jq -c '{kty, crv, x, y, alg: "ECMR"}' > "$w/x.jwk"
floor="$w/floor 127.0.0.1:$port /rec/$(jose jwk thp -i "$xkey") $w/x.jwk"
$floor >/dev/null

echo "old: $(git rev-parse --short "$rev"), new: the work tree; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in $(seq "${BATCHES:-3}"); do
  "$w/alternate" -n "${N:-40}" -in "$w/t.jwe" "$w/tether-new decrypt" "$w/tether-old decrypt" "clevis decrypt" "$floor" > "$w/b.json"
  jq -r --arg load "$(cut -d' ' -f1 /proc/loadavg)" '"batch: new \(.[0].median_ms) ms, old \(.[1].median_ms) ms, clevis \(.[2].median_ms) ms, floor \(.[3].median_ms) ms; of clevis: new \(.[0].median_ms/.[2].median_ms*1000|round/1000), old \(.[1].median_ms/.[2].median_ms*1000|round/1000), floor \(.[3].median_ms/.[2].median_ms*1000|round/1000) (load \($load))"' "$w/b.json"
done

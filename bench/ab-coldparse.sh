#!/usr/bin/env bash
# The first parse of a tang JWE in a fresh process (bench/coldparse), at a
# git revision and in the work tree, alternating, so that both see the same
# machine. No network.
#
#   bench/ab-coldparse.sh REV           REV: the git revision to compare with
#   N=400 bench/ab-coldparse.sh REV
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/ab-coldparse.sh REV}
export PATH="/usr/local/go/bin:$PATH"
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
mkdir "$w/old"; git archive "$rev" | tar -x -C "$w/old"
mkdir -p "$w/old/bench/coldparse"; cp bench/coldparse/main.go "$w/old/bench/coldparse/"
(cd "$w/old" && CGO_ENABLED=0 go build -o "$w/old.bin" ./bench/coldparse)
CGO_ENABLED=0 go build -o "$w/new.bin" ./bench/coldparse
jwe=pin/tang/testdata/new.jwe
for _ in $(seq "${N:-200}"); do
  echo "new $("$w/new.bin" "$jwe")"; echo "old $("$w/old.bin" "$jwe")"
done > "$w/times"
echo "old: $(git rev-parse --short "$rev"), new: the work tree; load: $(cut -d' ' -f1-3 /proc/loadavg)"
for k in new old; do
  awk -v k="$k" '$1 == k {print $2}' "$w/times" | sort -n |
    awk -v k="$k" '{a[NR]=$1} END {printf "%s: median %.1f µs (p25 %.1f, p75 %.1f) of %d runs\n", k, a[int((NR+1)/2)]/1000, a[int(NR/4)]/1000, a[int(3*NR/4)]/1000, NR}'
done

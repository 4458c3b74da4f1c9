#!/usr/bin/env bash
# The tether server before and after a change, side by side: both serve the
# same P-521 keys (tangd's, imported) on loopback, and bench/tangload loads
# them in turn, A B B A ..., with new connections and with kept-alive ones.
# The servers run on CPU 0 and the load on CPU 1 (taskset), so that each
# server's CPU per /rec is its own.
#
#   bench/ab-server.sh REV      REV: the git revision to compare the work tree with
#   ROUNDS=6 DUR=5s CONC=64 bench/ab-server.sh REV
#
# Prints each phase, then the medians per server and mode.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/ab-server.sh REV}
export PATH="/usr/local/go/bin:$PATH"
ROUNDS=${ROUNDS:-4}; DUR=${DUR:-5s}; CONC=${CONC:-64}
w=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$w"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

mkdir -p "$w/src-old" "$w/old" "$w/new"; git archive "$rev" | tar -x -C "$w/src-old"
(cd "$w/src-old" && CGO_ENABLED=0 go build -o "$w/old/" ./cmd/tether ./cmd/tether-server)
CGO_ENABLED=0 go build -o "$w/new/" ./cmd/tether ./cmd/tether-server
go build -o "$w/tangload" ./bench/tangload

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitup() { for _ in $(seq 100); do curl -sf "$1/adv" >/dev/null && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }
cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

mkdir "$w/tang"; /usr/libexec/tangd-keygen "$w/tang"
declare -A URL PID
for v in old new; do
  "$w/$v/tether" server keys import --data "$w/data-$v" "$w/tang" 2>/dev/null
  port=$(freeport)
  taskset -c 0 "$w/$v/tether-server" server --listen "127.0.0.1:$port" --data "$w/data-$v" --log-level warn & pids+=($!)
  URL[$v]=http://127.0.0.1:$port; PID[$v]=$!
  waitup "${URL[$v]}"
done

echo "old: $(git rev-parse --short "$rev"), new: the work tree; $CONC clients, $DUR per phase; load: $(cut -d' ' -f1-3 /proc/loadavg)"
phase() { # version mode(new|keepalive)
  local v=$1 mode=$2 c0 c1 out args=()
  [[ $mode == keepalive ]] && args=(-keepalive)
  c0=$(cpu_ticks "${PID[$v]}")
  out=$(taskset -c 1 "$w/tangload" -url "${URL[$v]}" -json -c "$CONC" -d "$DUR" "${args[@]}")
  c1=$(cpu_ticks "${PID[$v]}")
  jq -r --arg v "$v" --arg m "$mode" --arg c0 "$c0" --arg c1 "$c1" --arg hz "$hz" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
    '"\($v) \($m) \(.per_second|round) \(if .ok > 0 then (($c1|tonumber)-($c0|tonumber))/($hz|tonumber)*1e6/.ok|round else 0 end) \(.failed) \(.p99_ms) \($load)"' <<<"$out"
}
echo "server mode req/s cpu_us_per_rec failed p99_ms load" | tee "$w/all"
for r in $(seq "$ROUNDS"); do
  order=(old new); (( r % 2 == 0 )) && order=(new old)
  for mode in new keepalive; do
    for v in "${order[@]}"; do phase "$v" "$mode" | tee -a "$w/all"; done
  done
done
echo "medians:"
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for mode in new keepalive; do
  for v in old new; do
    rps=$(awk -v v="$v" -v m="$mode" '$1==v && $2==m {print $3}' "$w/all" | median)
    cpu=$(awk -v v="$v" -v m="$mode" '$1==v && $2==m {print $4}' "$w/all" | median)
    printf '%s %-9s %6.0f req/s  %5.0f us CPU per /rec\n' "$v" "$mode" "$rps" "$cpu"
  done
done

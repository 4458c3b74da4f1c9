#!/usr/bin/env bash
# Side-by-side benchmarks: tether against the stock Debian tangd and clevis,
# on this machine, in one run, with the same load generator (bench/tangload).
# Prints each figure with its ratio and writes docs/BENCHMARKS.md.
#
#   bench/run.sh            full run (~3 minutes)
#   DUR=5s bench/run.sh     shorter load phases
#
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
for p in hyperfine jq; do command -v $p >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q $p >&2; done
export PATH="/usr/local/go/bin:$PATH"

DUR=${DUR:-10s}
CONC=${CONC:-64}
STORM=${STORM:-10000}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

CGO_ENABLED=0 go build -o "$work/" ./cmd/tether ./cmd/tether-server ./cmd/tether-smb  # as they ship: static; tether runs tether-server for "server"
go build -o "$work/tangload" ./bench/tangload
go build -o "$work/devices" ./bench/devices
go build -o "$work/mstorm" ./bench/mstorm
go build -o "$work/alternate" ./bench/alternate
CGO_ENABLED=0 go build -o "$work/floor" ./bench/floor
T="$work/tether"; L="$work/tangload"
DEVICES=${DEVICES:-100000}

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitup() { for _ in $(seq 100); do curl -sf "$1/adv" >/dev/null && return 0; sleep 0.1; done; echo "$1 did not come up" >&2; exit 1; }
# cpu_ticks PID: user+system CPU of the process and its reaped children, in clock ticks
cpu_ticks() { awk '{print $14+$15+$16+$17}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# Same P-521 keys for both servers: tangd's, imported into tether.
mkdir -p "$work/tang"; /usr/libexec/tangd-keygen "$work/tang"
"$T" server keys import --data "$work/data521" "$work/tang" 2>/dev/null
tport=$(freeport); systemd-socket-activate --inetd -a -l "127.0.0.1:$tport" /usr/libexec/tangd "$work/tang" 2>/dev/null & pids+=($!); tangd_pid=$!
eport=$(freeport); "$T" server --listen "127.0.0.1:$eport" --data "$work/data521" --log-level warn & pids+=($!); tether_pid=$!
# The P-256 server runs on CPU 0 and its load on CPU 1 (taskset): its CPU per request is
# then measured without the load generator competing for the same core.
p256port=$(freeport); taskset -c 0 "$T" server --listen "127.0.0.1:$p256port" --data "$work/data256" --curve P-256 --log-level warn & pids+=($!); p256_pid=$!
TANGD=http://127.0.0.1:$tport; TETHER=http://127.0.0.1:$eport; TETHER256=http://127.0.0.1:$p256port
waitup "$TANGD"; waitup "$TETHER"; waitup "$TETHER256"

declare -A R
measure() { # name url pid args...
  local name=$1 url=$2 pid=$3; shift 3
  local c0 c1 out
  c0=$(cpu_ticks "$pid")
  out=$($L -url "$url" -json "$@")
  c1=$(cpu_ticks "$pid")
  R[$name.rps]=$(jq -r .per_second <<<"$out")
  R[$name.ok]=$(jq -r .ok <<<"$out")
  R[$name.fail]=$(jq -r .failed <<<"$out")
  R[$name.p50]=$(jq -r .p50_ms <<<"$out")
  R[$name.p99]=$(jq -r .p99_ms <<<"$out")
  R[$name.secs]=$(jq -r .seconds <<<"$out")
  R[$name.cpu_us]=$(awk -v a="$c0" -v b="$c1" -v n="${R[$name.ok]}" -v hz="$hz" 'BEGIN{ if (n>0) printf "%.0f", (b-a)/hz*1e6/n; else print "n/a" }')
  printf '%-28s %8.0f req/s  p50 %7.1f ms  p99 %7.1f ms  cpu/rec %6s us  (%s ok, %s failed)\n' \
    "$name" "${R[$name.rps]}" "${R[$name.p50]}" "${R[$name.p99]}" "${R[$name.cpu_us]}" "${R[$name.ok]}" "${R[$name.fail]}" >&2
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b<=0) print "n/a"; else if (a/b < 1) printf "%.3f", a/b; else printf "%.2f", a/b }'; }  # 3 decimals below 1: 0.103 must not print as 0.10

echo "== /rec throughput, P-521, $CONC clients, $DUR each" >&2
measure tangd.new "$TANGD" "$tangd_pid" -c "$CONC" -d "$DUR"
measure tether.new "$TETHER" "$tether_pid" -c "$CONC" -d "$DUR"
measure tangd.keepalive "$TANGD" "$tangd_pid" -c "$CONC" -d "$DUR" -keepalive
measure tether.keepalive "$TETHER" "$tether_pid" -c "$CONC" -d "$DUR" -keepalive
echo "== /rec, P-256 keys, keep-alive" >&2
L_saved=$L; L="taskset -c 1 $L_saved"
measure tether256.keepalive "$TETHER256" "$p256_pid" -c "$CONC" -d "$DUR" -keepalive
L=$L_saved
raw256=$(taskset -c 0 "$L" -raw P-256 -d 3s); raw521=$("$L" -raw P-521 -d 3s)
openssl256=$(openssl speed -seconds 3 ecdhp256 2>/dev/null | awk '/nistp256/ && /ecdh/ {print $NF}' | tail -1)
openssl256_us=$(awk -v n="$openssl256" 'BEGIN{ if (n>0) printf "%.0f", 1e6/n; else print "n/a" }')
raw256_us=$(awk -v n="$raw256" 'BEGIN{printf "%.0f", 1e6/n}')
openssl521=$(openssl speed -seconds 3 ecdhp521 2>/dev/null | awk '/nistp521/ && /ecdh/ {print $NF}' | tail -1)

echo "== boot storm: $STORM devices at once against tether (P-521)" >&2
measure storm.tether "$TETHER" "$tether_pid" -storm "$STORM"

echo "== client: decrypt latency (tang pin), alternating runs" >&2
echo secret | "$T" encrypt tang "{\"url\":\"$TANGD\"}" -y > "$work/t.jwe"
echo secret | "$T" encrypt tang "{\"url\":\"$TETHER\"}" -y > "$work/t2.jwe"
# Both clients against the same server, their runs alternating (bench/alternate), so that both
# see the same machine: first tangd (a process per connection), then the tether server.
# The floor (bench/floor) runs in the same batch: a static Go program that only sends a prepared
# /rec (tangd's exchange key itself, a valid point) and reads the reply, the least any Go client pays.
for k in "$work"/tang/*.jwk; do jq -e '.key_ops | index("deriveKey")' "$k" >/dev/null && xkey=$k; done
jose jwk pub -i "$xkey" | jq -c '{kty, crv, x, y, alg: "ECMR"}' > "$work/x.jwk"
"$work/floor" "127.0.0.1:$tport" "/rec/$(jose jwk thp -i "$xkey")" "$work/x.jwk" >/dev/null
# Against tangd the ratio sits close to its target and moves with the machine's state from
# batch to batch, so there are DECBATCHES batches: the table shows the one with the median
# ratio, and the text lists every batch's ratio.
DECBATCHES=${DECBATCHES:-3}
dec_runs=()
for b in $(seq "$DECBATCHES"); do
  "$work/alternate" -n 40 -in "$work/t.jwe" "$T decrypt" "clevis decrypt" \
    "$work/floor 127.0.0.1:$tport /rec/$(jose jwk thp -i "$xkey") $work/x.jwk" > "$work/dec1-$b.json"
  dec_runs+=("$(jq -r '.[0].median_ms / .[1].median_ms' "$work/dec1-$b.json") $b")
done
mid=$(printf '%s\n' "${dec_runs[@]}" | sort -g | awk -v n="$DECBATCHES" 'NR == int((n + 1) / 2) {print $2}')
cp "$work/dec1-$mid.json" "$work/dec1.json"
batch_ratios() { # column: 0 tether, 2 floor; each batch's ratio to clevis, in batch order
  for b in $(seq "$DECBATCHES"); do echo "$(ratio "$(jq ".[$1].median_ms" "$work/dec1-$b.json")" "$(jq '.[1].median_ms' "$work/dec1-$b.json")")"; done | paste -sd, | sed 's/,/, /g'
}
dec_batches=$(batch_ratios 0); floor_batches=$(batch_ratios 2)
echo "decrypt against tangd, ratio to clevis per batch: $dec_batches (floor: $floor_batches)" >&2
"$work/alternate" -n 40 -in "$work/t2.jwe" "$T decrypt" "clevis decrypt" > "$work/dec2.json"
tdec=$(jq '.[0].median_ms' "$work/dec1.json"); cdec=$(jq '.[1].median_ms' "$work/dec1.json")
fdec=$(jq '.[2].median_ms' "$work/dec1.json")
tdec2=$(jq '.[0].median_ms' "$work/dec2.json"); cdec2=$(jq '.[1].median_ms' "$work/dec2.json")
# The server's share of one decrypt: one client, a new connection per /rec, as a decrypt makes.
measure tangd.one "$TANGD" "$tangd_pid" -c 1 -d 3s
measure tether.one "$TETHER" "$tether_pid" -c 1 -d 3s
own() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", a-b}'; }
cown=$(own "$cdec" "${R[tangd.one.p50]}"); town=$(own "$tdec" "${R[tangd.one.p50]}")
cown2=$(own "$cdec2" "${R[tether.one.p50]}"); town2=$(own "$tdec2" "${R[tether.one.p50]}")

echo "== sss t=1 of 3, first server blackholed" >&2
bh=$(freeport); python3 -c "
import socket,time,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1',$bh)); s.listen(64)
conns=[]
while True:
    c,_=s.accept(); conns.append(c)
" & pids+=($!)
sleep 0.3
echo secret | "$T" encrypt sss "{\"t\":1,\"pins\":{\"tang\":[{\"url\":\"$TETHER\"},{\"url\":\"$TANGD\"},{\"url\":\"$TETHER256\"}]}}" -y > "$work/s.jwe"
# Rewrite the first child to point at the blackhole: encrypt against it with its adv.
adv=$(curl -sf "$TETHER/adv")
echo secret | "$T" encrypt sss "{\"t\":1,\"pins\":{\"tang\":[{\"url\":\"http://127.0.0.1:$bh\",\"adv\":$adv},{\"url\":\"$TANGD\"},{\"url\":\"$TETHER256\"}]}}" -y > "$work/s.jwe"
s0=$(date +%s.%N); "$T" decrypt --timeout 30s < "$work/s.jwe" >/dev/null; s1=$(date +%s.%N)
sss_ms=$(awk -v a="$s0" -v b="$s1" 'BEGIN{printf "%.0f", (b-a)*1000}')
echo "sss t=1/3 with a blackholed first server: $sss_ms ms" >&2

echo "== LUKS unlock path on a default-formatted (argon2id) image, bound to the tether server" >&2
img="$work/disk.img"; truncate -s 64M "$img"
printf 'recovery-passphrase' | cryptsetup luksFormat --batch-mode --type luks2 --key-file - "$img"
luksstate="$work/luksstate"; mkdir -m 700 "$luksstate"
printf 'recovery-passphrase\n' | TETHER_LUKS_STATE_DIR="$luksstate" "$T" luks bind -d "$img" -k - tang "{\"url\":\"$TETHER\"}" -y >/dev/null 2>&1
slot=$(TETHER_LUKS_STATE_DIR="$luksstate" "$T" luks list -d "$img" | awk -F: 'NR==1{print $1}')
# clevis luks unlock: the passphrase from the token, then cryptsetup without a keyslot (argon2 slot first).
cat > "$work/clevis-unlock.sh" <<EOT
#!/bin/sh
clevis luks pass -d "$img" -s $slot | cryptsetup open --test-passphrase --key-file - "$img"
EOT
chmod +x "$work/clevis-unlock.sh"
hyperfine -N -w 1 -r 5 --export-json "$work/luks.json" "$work/clevis-unlock.sh" \
  "env TETHER_LUKS_STATE_DIR=$luksstate $T luks unlock -d $img --test" >/dev/null 2>&1
cluks=$(jq '.results[0].median*1000' "$work/luks.json"); tluks=$(jq '.results[1].median*1000' "$work/luks.json")
echo "unlock path: clevis $cluks ms, tether $tluks ms" >&2

echo "== managed mode: server memory with $DEVICES enrolled devices" >&2
"$work/devices" -data "$work/managed" -n "$DEVICES" 2>&1 | tail -1 >&2
mport=$(freeport); mport2=$(freeport)
"$T" server --listen "127.0.0.1:$mport" --managed-listen "127.0.0.1:$mport2" --data "$work/managed" --curve P-256 --unlock-rate -1 --log-level warn & pids+=($!); mpid=$!
waitup "http://127.0.0.1:$mport"
export TETHER_ADMIN_CONFIG="$work/managed/admin.json"
for _ in $(seq 50); do [ -f "$TETHER_ADMIN_CONFIG" ] && break; sleep 0.1; done
tok=$("$T" admin token create)
dev="$work/dev"; mkdir -m 700 "$dev"
echo "$tok" | TETHER_DEVICE_DIR="$dev" "$T" enroll --server "https://127.0.0.1:$mport2" --token-file - --key-store file >/dev/null
echo secret | TETHER_DEVICE_DIR="$dev" "$T" encrypt managed '{}' > "$work/m.jwe"
m0=$(date +%s.%N)
for _ in $(seq 100); do TETHER_DEVICE_DIR="$dev" "$T" decrypt < "$work/m.jwe" >/dev/null; done
m1=$(date +%s.%N)
managed_ms=$(awk -v a="$m0" -v b="$m1" 'BEGIN{printf "%.1f", (b-a)*1000/100}')
rss0_mb=$(awk '/VmRSS/{printf "%.0f", $2/1024}' /proc/$mpid/status)
"$T" admin device list > "$work/devlist.txt"
ndev=$(grep -c dev- "$work/devlist.txt" || true)
rss_mb=$(awk '/VmRSS/{printf "%.0f", $2/1024}' /proc/$mpid/status)
hwm_mb=$(awk '/VmHWM/{printf "%.0f", $2/1024}' /proc/$mpid/status)
echo "managed: RSS $rss0_mb MB after 100 unlocks; $ndev devices listed; RSS $rss_mb MB, peak $hwm_mb MB; managed unlock (whole tether decrypt) $managed_ms ms" >&2

echo "== managed boot storm: $STORM enrolled devices unlock at once, each over its own mutual TLS" >&2
"$work/devices" -data "$work/fleet" -n "$STORM" -keys "$work/fleet/fleet.keys" 2>&1 | tail -1 >&2
sport=$(freeport); sport2=$(freeport)
"$T" server --listen "127.0.0.1:$sport" --managed-listen "127.0.0.1:$sport2" --data "$work/fleet" --curve P-256 --unlock-rate -1 --log-level warn & pids+=($!); spid=$!
waitup "http://127.0.0.1:$sport"
for _ in $(seq 50); do [ -f "$work/fleet/admin.json" ] && break; sleep 0.1; done
c0=$(cpu_ticks "$spid")
ms_out=$("$work/mstorm" -data "$work/fleet" -keys "$work/fleet/fleet.keys" -json)
c1=$(cpu_ticks "$spid")
for k in ok failed p50_ms p99_ms seconds; do R[mstorm.$k]=$(jq -r ".$k" <<<"$ms_out"); done
R[mstorm.cpu_us]=$(awk -v t=$((c1 - c0)) -v hz="$hz" -v n="$STORM" 'BEGIN{printf "%.0f", t/hz*1e6/n}')
echo "managed storm: ${R[mstorm.ok]} ok, ${R[mstorm.failed]} failed; p50 ${R[mstorm.p50_ms]} ms, p99 ${R[mstorm.p99_ms]} ms, last after ${R[mstorm.seconds]} s; server CPU ${R[mstorm.cpu_us]} us per unlock" >&2

new_ratio=$(ratio "${R[tether.new.rps]}" "${R[tangd.new.rps]}")
ka_ratio=$(ratio "${R[tether.keepalive.rps]}" "${R[tangd.keepalive.rps]}")
p256_ratio=$(ratio "${R[tether256.keepalive.cpu_us]}" "$raw256_us")
dec_ratio=$(ratio "$tdec" "$cdec")
dec_ratio2=$(ratio "$tdec2" "$cdec2")
own_ratio=$(ratio "$town" "$cown"); own_ratio2=$(ratio "$town2" "$cown2")
luks_ratio=$(ratio "$tluks" "$cluks")
floor_ratio=$(ratio "$fdec" "$cdec")
p521_ratio=$(ratio "$openssl521" "$raw521")

out=docs/BENCHMARKS.md
# The Boot sections are bench/boot.sh's (real-Debian guests, over an hour): kept as they are.
boot_section=$(sed -n '/<!-- boot:begin/,/<!-- boot:end -->/p' "$out" 2>/dev/null || true)
bootfail_section=$(sed -n '/<!-- boot-failures:begin/,/<!-- boot-failures:end -->/p' "$out" 2>/dev/null || true)
# So is the record of single changes measured old against new (bench/ab-*.sh): their old code is gone.
issue19_section=$(sed -n '/<!-- issue19:begin/,/<!-- issue19:end -->/p' "$out" 2>/dev/null || true)
# And the idle-connection figures, which internal/cli's TestIdleTangConnectionsSpareManaged measures (too
# heavy for this script: 20,300 connections): kept where they stand, between Client and Managed mode.
conncap_section=$(sed -n '/<!-- conncap:begin/,/<!-- conncap:end -->/p' "$out" 2>/dev/null || true)
{
cat <<EOT
# Benchmarks

Latest run: $(date -u +%Y-%m-%d), \`bench/run.sh\` (DUR=$DUR, $CONC clients; load generator \`bench/tangload\` with
its minimal HTTP/1.1 client, the same for tangd and tether). Machine: $(nproc) cores,
$(awk '/model name/{sub(/.*: /,""); print; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/{print $2}') GiB; Debian tang $(dpkg-query -W -f='${Version}' tang),
clevis $(dpkg-query -W -f='${Version}' clevis), $(openssl version | cut -d' ' -f1-2). Load generator and servers share the machine.
Reproduce with \`bench/run.sh\`; every figure below comes from that one run.

## Key server, POST /rec (P-521, same keys: tangd's, imported)

| run | tangd | tether | ratio (tether/tangd) | target |
|---|---|---|---|---|
| new connection per request, $CONC clients | ${R[tangd.new.rps]%.*} req/s | ${R[tether.new.rps]%.*} req/s | **$new_ratio** | ≥ 10 |
| kept-alive connections, $CONC clients | ${R[tangd.keepalive.rps]%.*} req/s | ${R[tether.keepalive.rps]%.*} req/s | **$ka_ratio** | ≥ 3 |
| server CPU per /rec (kept-alive) | ${R[tangd.keepalive.cpu_us]} µs | ${R[tether.keepalive.cpu_us]} µs | | |
| p99 latency (kept-alive) | ${R[tangd.keepalive.p99]} ms | ${R[tether.keepalive.p99]} ms | | |

Raw P-521 scalar multiplications per core: tether (Go) $raw521/s, OpenSSL $openssl521/s (ECDH, \`openssl speed ecdhp521\`):
OpenSSL/tether = **$p521_ratio** (target ≤ 1.5).

## P-256 keys: overhead over the crypto

tether with P-256 keys, kept-alive: ${R[tether256.keepalive.rps]%.*} req/s, server CPU ${R[tether256.keepalive.cpu_us]} µs per /rec;
one raw P-256 scalar multiplication with the same code (nistec, point decoding and encoding included):
$raw256_us µs ($raw256/s). Ratio **$p256_ratio** (target ≤ 1.5). For reference, OpenSSL's P-256 ECDH in the
same run: $openssl256_us µs ($openssl256/s).

## Boot storm

$STORM devices recover at once (a new connection each) from one tether server (P-521):
${R[storm.tether.ok]} succeeded, ${R[storm.tether.fail]} failed; p50 ${R[storm.tether.p50]} ms, p99 ${R[storm.tether.p99]} ms,
last success after $(printf %.2f "${R[storm.tether.secs]}") s.

## Client

| | clevis | tether | ratio (tether/clevis) | target |
|---|---|---|---|---|
| decrypt, tang pin, server tangd, medians of 40 alternating runs (\`bench/alternate\`), the batch with the median ratio of $DECBATCHES | $(printf %.1f "$cdec") ms | $(printf %.1f "$tdec") ms | **$dec_ratio** | ≤ 0.1 |
| decrypt, tang pin, server tether, median of 40 alternating runs (\`bench/alternate\`) | $(printf %.1f "$cdec2") ms | $(printf %.1f "$tdec2") ms | **$dec_ratio2** | ≤ 0.1 |
| unlock path of a bound volume (default argon2id image; clevis: \`clevis luks pass\` + \`cryptsetup open\` without a keyslot; tether: \`luks unlock --test\`), median | $(printf %.0f "$cluks") ms | $(printf %.0f "$tluks") ms | **$luks_ratio** | ≤ 0.1 |

Against tangd, the ratio of each of the $DECBATCHES batches, in order: $dec_batches (the floor below:
$floor_batches). It moves with the machine's state from batch to batch by a few thousandths.

Where the time goes: one /rec on a new connection, one client (tangload, p50), takes tangd
${R[tangd.one.p50]} ms by itself — it starts a tangd process per connection, as its systemd socket
does — and the tether server ${R[tether.one.p50]} ms. Against tangd that is most of tether's
$(printf %.1f "$tdec") ms; the clients' own time (median wall time minus the server's p50):

| server | clevis | tether | ratio |
|---|---|---|---|
| tangd | $cown ms | $town ms | $own_ratio |
| tether | $cown2 ms | $town2 ms | $own_ratio2 |

The floor for any Go client against tangd: \`bench/floor\`, a static Go program that only connects,
sends a prepared /rec and reads the reply (no JWE, no blinding, no decryption), timed in the same
alternating runs, takes $(printf %.1f "$fdec") ms, **$floor_ratio** of \`clevis decrypt\`. \`tether decrypt\` connects first
thing in its exchange, so blinding and the unblinding term overlap tangd's start; it spends $(own "$tdec" "$fdec") ms more than
the floor in reaching its connect later (a larger program's runtime start and package inits, reading and parsing
the JWE), unblinding and decrypting after the reply, and exiting a larger program (docs/DESIGN.md, "Client latency").

sss t=1 of 3 with the first server blackholed (accepts, never answers): decrypted in $sss_ms ms (target ≤ 2000 ms).

$conncap_section

## Managed mode

$ndev enrolled devices (SQLite store, filled by \`bench/devices\`): server RSS **$rss0_mb MB** after 100 managed
unlocks; **$rss_mb MB** after one \`tether admin device list\` of all of them (streamed); peak **$hwm_mb MB**
(target ≤ 200 MB).
One managed unlock (a whole \`tether decrypt\` process: mTLS handshake, policy, audit, blinded exchange): $managed_ms ms.

Boot storm in managed mode (\`bench/mstorm\`, fleet made by \`bench/devices -keys\`): $STORM enrolled devices
unlock at once, each on its own mutually authenticated TLS 1.3 connection, and each unlock is checked against
the device's state and policy, audited and recorded as last-seen: ${R[mstorm.ok]} succeeded, ${R[mstorm.failed]} failed;
p50 $(printf %.0f "${R[mstorm.p50_ms]}") ms, p99 $(printf %.0f "${R[mstorm.p99_ms]}") ms, last success after $(printf %.2f "${R[mstorm.seconds]}") s. Server CPU ${R[mstorm.cpu_us]} µs per
unlock; the TLS handshake (hybrid X25519/ML-KEM key exchange, client certificate check) is most of it, and
the load generator, whose handshakes cost as much, shares the same cores.
EOT
[[ -n "$boot_section" ]] && printf '\n%s\n' "$boot_section"
[[ -n "$bootfail_section" ]] && printf '\n%s\n' "$bootfail_section"
[[ -n "$issue19_section" ]] && printf '\n%s\n' "$issue19_section"
} > "$out"
echo "wrote $out" >&2
cat "$out"

#!/usr/bin/env bash
# Boot benchmark beside Debian's clevis-initramfs: one real Debian 12 guest
# image (test/realboot), two initramfs images built in it (clevis-initramfs,
# tether's hook), the same LUKS2 binding and the same tether server; time
# from kernel start to the root mounted, healthy server and first server
# down (section "Boot" of docs/BENCHMARKS.md). Then the same guest, a
# stock initramfs beside them, under network failures: time to the
# passphrase prompt, and from a server's return to the root mounted
# (section "Boot under failure").
#
#   bench/boot.sh                  both, 3 boots of each (~90 minutes under emulation)
#   RUNS=1 bench/boot.sh
#   PART=failures RUNS=1 bench/boot.sh   only the failures (PART=root: only the first)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
export PATH="/usr/local/go/bin:$PATH"
out=$(mktemp)
fout=$(mktemp)
trap 'rm -f "$out" "$fout"' EXIT
case "${PART:-all}" in
  all) run='^TestBoot(Failure)?Benchmark$' ;;
  root) run='^TestBootBenchmark$' ;;
  failures) run='^TestBootFailureBenchmark$' ;;
  *) echo "bench/boot.sh: PART is all, root or failures, not \"$PART\"" >&2; exit 2 ;;
esac
TETHER_BENCH_BOOT=1 TETHER_BENCH_OUT="$out" TETHER_BENCH_FAILURE_OUT="$fout" RUNS="${RUNS:-3}" \
  go test -count=1 -timeout 240m -run "$run" -v ./test/realboot
python3 - "$out" "$fout" <<'PY'
import sys, datetime, re
doc = open("docs/BENCHMARKS.md").read()

def put(doc, name, section):
    pat = re.compile(r"<!-- %s:begin.*?<!-- %s:end -->\n" % (name, name), re.S)
    if pat.search(doc):
        return pat.sub(lambda m: section, doc)
    return doc.rstrip("\n") + "\n\n" + section

table = open(sys.argv[1]).read()
if table:
    section = f"""<!-- boot:begin (bench/boot.sh writes this section; bench/run.sh keeps it) -->
## Boot: kernel start to root mounted, beside clevis-initramfs

Latest run: {datetime.date.today()}, `bench/boot.sh`. A real Debian 12 guest under QEMU (TCG,
2 vCPUs, no KVM on these machines, so every figure is several times a real machine's), root on
LUKS2 bound once with a clevis token that both read; the same tether server on the host.
The initramfs images differ only in Debian's clevis-initramfs 19 or tether's hook, and the
kernel command line in `ip=`: clevis-initramfs 19 reads `ip=dhcp` as an interface named
"dhcp", waits for it and falls to the passphrase prompt, so its boots name the card
(`ip=:::::enp0s4:dhcp`); tether's get `ip=dhcp`. Medians (the upper of two; each run listed),
from the kernel's timestamp of systemd's first line in the real root. The second row's
first server never answers (dropped packets): both try the servers of an sss at once, so
neither waits for it.

{table}
<!-- boot:end -->
"""
    doc = put(doc, "boot", section)
ftable = open(sys.argv[2]).read()
if ftable:
    fsection = f"""<!-- boot-failures:begin (bench/boot.sh writes this section; bench/run.sh keeps it) -->
## Boot under failure: time to the prompt, and to unlocked after a server's return

Latest run: {datetime.date.today()}, `PART=failures bench/boot.sh`. The guest of the table
above (TCG, 2 vCPUs) with three initramfs images of one tree: stock (Debian's
cryptsetup-initramfs alone), clevis-initramfs 19, and tether's hook with its default
settings (30 s deadline, then retrying behind the prompt). Times are from power-on (QEMU's
start) to cryptroot's prompt, or from the server's return to systemd's first line in the
real root with nothing typed; medians, each run listed. clevis shows its prompt at once and
tries behind it; tether tries first, for its deadline, and says why on the console before
the prompt; without a network binding it starts no network at all.

{ftable}
<!-- boot-failures:end -->
"""
    doc = put(doc, "boot-failures", fsection)
open("docs/BENCHMARKS.md", "w").write(doc)
PY
echo "bench/boot.sh: wrote its sections of docs/BENCHMARKS.md" >&2

#!/usr/bin/env bash
# Installs the real peers (tang, clevis, cryptsetup, ...) and runs the whole
# test suite. With CI=true a missing peer fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
# The real-Debian guests (test/realboot) boot under emulation for most of
# the run, which makes them the critical path of a CI run: they start
# first and run beside everything else (vet, builds, packages and the rest
# of the suite). On a fresh machine even the setup is shared: what the
# guest images need is installed first, and the images build (mmdebstrap,
# about 10 minutes when not cached) while the other peers install; the
# guests boot once those are in.
# By default all the guests that issue 16's scenarios need run, in two
# lanes at once: the initramfs-tools chain (TestInitramfsTools, the
# longest test) beside the others one after another. A guest under TCG
# keeps about 1.2 of the 2 cores busy (it waits for DHCP, timers, its
# disk), so two side by side finish far sooner than one after the other.
# REALBOOT picks other tests (a go test -run pattern; "." for all,
# docs/BOOT.md says which exist) and runs them in one lane.
scripts/setup.sh --images
if [[ -n "${REALBOOT:-}" ]]; then
  lanes=("$REALBOOT")
else
  lanes=('^TestInitramfsTools$' '^(TestUnmountUnder|TestDataVolumes|TestDracut|TestSetupBoot)$')
fi
realboot_log=$(mktemp)
setup_done=$(mktemp -u)
# shellcheck disable=SC2016 # expanded by the inner bash
setsid bash -c '
  setup_done=$1 log=$2 lanes=$3
  shift 3
  go test -v -count=1 -timeout 30m -run "^TestBaseImages$" "$@" ./test/realboot >"$log" 2>&1 || exit
  while [[ ! -e $setup_done ]]; do sleep 1; done
  pids=()
  i=0
  while IFS= read -r pattern; do
    i=$((i+1))
    go test -v -count=1 -timeout 80m -run "$pattern" "$@" ./test/realboot >"$log.$i" 2>&1 &
    pids+=($!)
  done <<<"$lanes"
  status=0
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  exit "$status"
' realboot "$setup_done" "$realboot_log" "$(printf '%s\n' "${lanes[@]}")" "$@" &
realboot=$!
# A step below that fails ends the script: take the guests with it (setsid
# gave the images build, go test, its test binary and their QEMUs one
# process group).
trap 'kill -- -"$realboot" 2>/dev/null || true; rm -f "$setup_done" "$realboot_log"*' EXIT
scripts/setup.sh --test
touch "$setup_done"
echo "== go vet" >&2
go vet ./...
echo "== gofmt" >&2
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change: $unformatted" >&2
  exit 1
fi
echo "== cross builds: arm64 and 32-bit arm (Raspberry Pi), 386" >&2
for arch in arm64 arm 386; do
  GOOS=linux GOARCH=$arch GOARM=7 CGO_ENABLED=0 go build -o /dev/null ./cmd/tether
  GOOS=linux GOARCH=$arch GOARM=7 CGO_ENABLED=0 go build -o /dev/null ./cmd/tether-server
  GOOS=linux GOARCH=$arch GOARM=7 CGO_ENABLED=0 go build -o /dev/null ./cmd/tether-smb
done
echo "== Debian packages for arm64 and armhf (amd64: go test ./test/deb installs them)" >&2
pkgdir=$(mktemp -d)
scripts/package.sh -a arm64,armhf -o "$pkgdir" $(command -v lintian >/dev/null && echo --lintian)
rm -rf "$pkgdir"
echo "== P-521 and the tang exchange without assembly (purego), and on 32-bit ARM (armhf, the Raspberry Pi's, under qemu-arm)" >&2
go test -count=1 -tags purego ./jose/internal/p521 ./tang
# Under qemu-user, not natively as 386: some machines' kernels run no
# 32-bit x86 binaries, and qemu-i386 7.2 crashes Go's 386 runtime.
GOARCH=arm GOARM=7 CGO_ENABLED=0 go test -count=1 -short -exec qemu-arm ./jose/internal/p521 ./jose ./tang ./pin/sss
echo "== go test" >&2
status=0
# One package at a time (-p 1): the guests, emulated beside them, need
# the CPU more than the unit tests need the speed; with two packages at
# once a starved guest hit systemd's timeouts in CI.
go test -p 1 -count=1 -timeout 25m "$@" $(go list ./... | grep -v '/test/realboot$') || status=$?
echo "== go test ./test/realboot (real Debian boots)" >&2
realboot_status=0
wait "$realboot" || realboot_status=$?
trap - EXIT
rm -f "$setup_done"
# Passed: how long each guest test took (the critical path's parts).
# Failed: everything they logged.
# (The image stage's log first, then each lane's.)
if ((realboot_status == 0)); then
  grep -hE '^ *--- (PASS|SKIP)|^ok ' "$realboot_log"*
else
  status=$realboot_status
  cat "$realboot_log"*
fi
rm -f "$realboot_log"*
exit "$status"

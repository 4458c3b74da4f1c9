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
# guests boot once those are in. By default all the guests that issue
# 16's scenarios need run; REALBOOT picks others (a go test -run pattern;
# "." for all, docs/BOOT.md says which exist).
scripts/setup.sh --images
REALBOOT_DEFAULT='^(TestUnmountUnder|TestBaseImages|TestInitramfsTools|TestDataVolumes|TestDracut|TestSetupBoot)$'
realboot_log=$(mktemp)
setup_done=$(mktemp -u)
# shellcheck disable=SC2016 # expanded by the inner bash
setsid bash -c '
  setup_done=$1 pattern=$2
  shift 2
  go test -v -count=1 -timeout 30m -run "^TestBaseImages$" "$@" ./test/realboot || exit
  while [[ ! -e $setup_done ]]; do sleep 1; done
  exec go test -v -count=1 -timeout 80m -run "$pattern" "$@" ./test/realboot
' realboot "$setup_done" "${REALBOOT:-$REALBOOT_DEFAULT}" "$@" >"$realboot_log" 2>&1 &
realboot=$!
# A step below that fails ends the script: take the guests with it (setsid
# gave the images build, go test, its test binary and their QEMUs one
# process group).
trap 'kill -- -"$realboot" 2>/dev/null || true; rm -f "$setup_done"' EXIT
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
if ((realboot_status == 0)); then
  grep -E '^ *--- (PASS|SKIP)|^ok ' "$realboot_log"
else
  status=$realboot_status
  cat "$realboot_log"
fi
rm -f "$realboot_log"
exit "$status"

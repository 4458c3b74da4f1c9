#!/usr/bin/env bash
# Installs what tether needs on a Debian 12 machine (run as root).
#   scripts/setup.sh          what the key server needs (a Go toolchain)
#   scripts/setup.sh --test   also every real peer the test suite runs against
#   scripts/setup.sh --images only what building the real-boot guest images
#                             needs (a subset of --test): scripts/test.sh
#                             starts that build while --test installs the rest
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

want_test=false
want_images=false
case "${1:-}" in
  --test) want_test=true ;;
  --images) want_images=true ;;
  "") ;;
  *)
    echo "setup: unknown option $1 (want --test, --images or nothing)" >&2
    exit 2
    ;;
esac

# What test/realboot's TestBaseImages runs on the host (realboot.Require):
# mmdebstrap builds the Debian trees in a private mount namespace
# (unshare); the guests are QEMU; images are LUKS2 (cryptsetup) with ext4
# (mkfs.ext4, debugfs); socat reaches their consoles. All are in test_pkgs.
image_pkgs=(mmdebstrap qemu-system-x86 cryptsetup-bin e2fsprogs util-linux socat)

# Packages the test suite runs against (see docs/TESTING.md for why each).
test_pkgs=(
  tang clevis clevis-luks jose cryptsetup-bin luksmeta
  curl socat e2fsprogs util-linux systemd swtpm swtpm-tools tpm2-tools clevis-tpm2
  samba smbclient openssl
  postgresql
  qemu-system-x86 linux-image-amd64 busybox-static
  qemu-user
  initramfs-tools dracut-core cpio
  mmdebstrap
  lintian zsh fish groff-base man-db
  iproute2 tmux
  chromium nodejs
)

missing=()
if ! command -v go >/dev/null 2>&1 && [[ ! -x /usr/local/go/bin/go ]]; then
  missing+=(golang-go ca-certificates)
fi
if $want_images; then
  for p in "${image_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if $want_test; then
  for p in "${test_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  # The dashboard's browser test (test/ui) needs npm: Debian packages it
  # separately, NodeSource's nodejs bundles it.
  command -v npm >/dev/null 2>&1 || missing+=(npm)
fi

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    echo "setup: hint: run sudo $0 $*" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
echo "setup: ok" >&2

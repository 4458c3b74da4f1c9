#!/usr/bin/env bash
# Builds the Debian packages tether and tether-server with dpkg-deb, from
# this checkout, the Go module proxy and nothing else (no debhelper, no
# network beyond Go modules). See packaging/deb/ for the units and
# maintainer scripts, and README.md, "Install".
#
#   scripts/package.sh [-o DIR] [-a amd64,arm64,armhf] [-v VERSION] [--lintian]
#
#   -o DIR      where the .deb files go (default ./dist)
#   -a ARCHES   Debian architectures (default amd64,arm64,armhf; armhf is
#               GOARCH=arm GOARM=7, the Raspberry Pi 2 and later)
#   -v VERSION  the package version (default 0.0~gitYYYYMMDD.REV from HEAD;
#               or $TETHER_VERSION)
#   --lintian   run lintian on each package and fail on an error or warning
#
# The builds are reproducible: file times are the commit's time, owners
# root, binaries built with -trimpath and no build ID.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"

out=dist
arches=amd64,arm64,armhf
version=${TETHER_VERSION:-}
lintian=false
while (($#)); do
  case $1 in
  -o) out=$2; shift 2 ;;
  -a) arches=$2; shift 2 ;;
  -v) version=$2; shift 2 ;;
  --lintian) lintian=true; shift ;;
  -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "package: error: unknown argument $1" >&2
     echo "package: hint: run $0 --help" >&2; exit 2 ;;
  esac
done
for tool in dpkg-deb go gzip; do
  command -v "$tool" >/dev/null || { echo "package: error: $tool is missing" >&2; echo "package: hint: run scripts/setup.sh" >&2; exit 1; }
done

commit=$(git rev-parse HEAD 2>/dev/null || echo "")
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH=$epoch
if [[ -z $version ]]; then
  version="0.0~git$(date -u -d "@$epoch" +%Y%m%d).$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
fi
if [[ ! $version =~ ^[0-9][A-Za-z0-9.+~-]*$ ]]; then
  echo "package: error: version $version is not a Debian version (it must start with a digit)" >&2
  echo "package: hint: give one like -v 1.2.3" >&2
  exit 2
fi
if [[ -n $commit && -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  echo "package: warning: the checkout has uncommitted changes; the packages say commit $commit" >&2
fi
ctime=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
pkgv=github.com/tether-nbde/tether/internal/version
ldflags="-s -w -buildid= -X $pkgv.Version=$version -X $pkgv.Commit=$commit -X $pkgv.CommitTime=$ctime"
maintainer="tether maintainers <maintainers@tether.invalid>"
homepage="https://github.com/tether-nbde/tether"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# What is the same for every architecture: the man pages and completions
# (from the command table, as --help), and the boot files as "tether
# install" writes them for /usr/bin/tether, made by a tether for this host.
echo "package: generating man pages and completions" >&2
go run ./internal/docgen/gen -version "$version" "$work/docs"
CGO_ENABLED=0 go build -trimpath -o "$work/host/" ./cmd/tether
for target in systemd initramfs-tools dracut; do
  "$work/host/tether" install "$target" --root "$work/boot" --bin /usr/bin/tether >/dev/null 2>&1
done

# stage puts files with fixed modes and times; deb builds one package.
put() { # put MODE SRC DST
  install -D -m "$1" "$2" "$3"
}
man_pages() { # man_pages SRCDIR ROOT
  local f
  for f in "$1"/*.1; do
    install -d "$2/usr/share/man/man1"
    gzip -9n < "$f" > "$2/usr/share/man/man1/$(basename "$f").gz"
    chmod 0644 "$2/usr/share/man/man1/$(basename "$f").gz"
  done
}
# copyright: the project's terms, then the license of every module the
# binaries link statically (Go's standard library included), as each ships it.
copyright() { # copyright PACKAGE BINARY-DIRS...
  local pkg=$1 p v d f
  shift
  cat <<TXT
This is the Debian package $pkg of tether, built by scripts/package.sh from
$homepage (commit ${commit:-unknown}).

tether: Copyright the tether maintainers.
The tether repository states no license yet (it has no LICENSE file): ask
its authors before you redistribute this package.

The binaries are statically linked with the Go standard library
($(go version | cut -d' ' -f3)) and the Go modules below. Their license
texts follow, each as the module ships it.

TXT
  printf '==== Go standard library (%s)\n\n' "$(go env GOROOT)/LICENSE"
  cat "$(go env GOROOT)/LICENSE"
  go list -deps -f '{{with .Module}}{{if not .Main}}{{.Path}} {{.Version}} {{.Dir}}{{end}}{{end}}' "$@" | LC_ALL=C sort -u |
    while read -r p v d; do
      for f in "$d"/LICENSE*; do
        [[ -f $f && $f != *.md ]] || continue
        printf '\n==== %s %s: %s\n\n' "$p" "$v" "$(basename "$f")"
        if grep -q 'Apache License' "$f" && grep -q 'Version 2.0' "$f"; then
          echo "Apache License, Version 2.0: see /usr/share/common-licenses/Apache-2.0"
        else
          cat "$f"
        fi
      done
    done
}
doc() { # doc ROOT PACKAGE CMDS...
  local d=$1/usr/share/doc/$2 pkg=$2
  shift 2
  install -d "$d"
  copyright "$pkg" "$@" > "$d/copyright"
  # A native package (no Debian revision): changelog.gz, not .Debian.gz.
  printf '%s (%s) unstable; urgency=medium\n\n  * Built by scripts/package.sh from commit\n    %s.\n\n -- %s  %s\n' \
    "$pkg" "$version" "${commit:-unknown}" "$maintainer" "$(date -u -R -d "@$epoch")" | gzip -9n > "$d/changelog.gz"
  chmod 0644 "$d/copyright" "$d/changelog.gz"
}
deb() { # deb ROOT PACKAGE ARCH
  local root=$1 pkg=$2 arch=$3 f
  (cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | LC_ALL=C sort |
    while read -r f; do
      if [[ -f DEBIAN/conffiles ]] && grep -qx "/$f" DEBIAN/conffiles; then continue; fi
      md5sum "$f"
    done) > "$root/DEBIAN/md5sums"
  chmod 0644 "$root/DEBIAN/md5sums" "$root/DEBIAN/control"
  find "$root" -type d -exec chmod 0755 {} +
  find "$root" -exec touch -h -d "@$epoch" {} +
  dpkg-deb --root-owner-group -Zxz --build "$root" "$out/${pkg}_${version}_${arch}.deb" >/dev/null
  echo "$out/${pkg}_${version}_${arch}.deb"
}
control() { # control PACKAGE ARCH ROOT FIELDS...
  local pkg=$1 arch=$2 root=$3
  shift 3
  local size
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    printf '%s\n' "$@"
    echo "Section: admin"
    echo "Priority: optional"
    echo "Homepage: $homepage"
  } > "$root/DEBIAN/control"
}

for arch in ${arches//,/ }; do
  case $arch in
  amd64) goarch=amd64 goarm= ;;
  arm64) goarch=arm64 goarm= ;;
  armhf) goarch=arm goarm=7 ;;
  *) echo "package: error: unknown architecture $arch (want amd64, arm64 or armhf)" >&2; exit 2 ;;
  esac
  echo "package: building the $arch binaries" >&2
  bin=$work/bin-$arch
  GOOS=linux GOARCH=$goarch GOARM=$goarm CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
    go build -trimpath -ldflags "$ldflags" -o "$bin/" ./cmd/tether ./cmd/tether-server ./cmd/tether-smb

  # tether: the client, its boot integration, manuals, completions.
  r=$work/root-tether-$arch
  install -d "$r/DEBIAN"
  put 0755 "$bin/tether" "$r/usr/bin/tether"
  put 0755 "$bin/tether-smb" "$r/usr/bin/tether-smb"
  for u in "$work"/boot/etc/systemd/system/*.service "$work"/boot/etc/systemd/system/*.socket "$work"/boot/etc/systemd/system/*.path; do
    put 0644 "$u" "$r/lib/systemd/system/$(basename "$u")"
  done
  # "tether install systemd" enables the units and makes every volume
  # want the socket; the package only orders volumes after it, so that
  # nothing starts until "systemctl enable" (README.Debian).
  install -d "$r/lib/systemd/system/systemd-cryptsetup@.service.d"
  grep -v '^Wants=tether-keyd.socket$' "$work/boot/etc/systemd/system/systemd-cryptsetup@.service.d/tether.conf" \
    > "$r/lib/systemd/system/systemd-cryptsetup@.service.d/tether.conf"
  chmod 0644 "$r/lib/systemd/system/systemd-cryptsetup@.service.d/tether.conf"
  put 0755 "$work/boot/etc/initramfs-tools/hooks/tether" "$r/usr/share/initramfs-tools/hooks/tether"
  put 0755 "$work/boot/etc/initramfs-tools/scripts/local-top/tether" "$r/usr/share/initramfs-tools/scripts/local-top/tether"
  put 0644 "$work/boot/etc/initramfs-tools/conf.d/tether" "$r/usr/share/initramfs-tools/conf-hooks.d/tether"
  for f in "$work"/boot/usr/lib/dracut/modules.d/60tether/*; do
    m=0644; [[ $f == *.sh ]] && m=0755
    put "$m" "$f" "$r/usr/lib/dracut/modules.d/60tether/$(basename "$f")"
  done
  man_pages "$work/docs/man1" "$r"
  put 0644 "$work/docs/bash/tether" "$r/usr/share/bash-completion/completions/tether"
  put 0644 "$work/docs/zsh/_tether" "$r/usr/share/zsh/vendor-completions/_tether"
  put 0644 "$work/docs/fish/tether.fish" "$r/usr/share/fish/vendor_completions.d/tether.fish"
  doc "$r" tether ./cmd/tether ./cmd/tether-smb
  put 0644 README.md "$r/usr/share/doc/tether/README.md"
  put 0644 packaging/deb/README.Debian "$r/usr/share/doc/tether/README.Debian"
  put 0755 packaging/deb/tether.postinst "$r/DEBIAN/postinst"
  put 0755 packaging/deb/tether.postrm "$r/DEBIAN/postrm"
  echo "activate-noawait update-initramfs" > "$r/DEBIAN/triggers"
  chmod 0644 "$r/DEBIAN/triggers"
  put 0644 packaging/deb/tether.lintian-overrides "$r/usr/share/lintian/overrides/tether"
  control tether "$arch" "$r" \
    "Depends: cryptsetup-bin" \
    "Recommends: cryptsetup" \
    "Suggests: tether-server" \
    "Description: network-bound disk encryption (Tang/Clevis compatible client)" \
    " tether binds LUKS2 volumes and secrets to key sources: Tang servers (stock" \
    " tangd or tether-server), TPM2, SMB shares, HTTPS endpoints, a managed" \
    " tether server, or any threshold of them. It is wire compatible with Clevis" \
    " and Tang, and unlocks at boot through systemd units, an initramfs-tools" \
    " hook or a dracut module." \
    " ." \
    " Nothing is enabled by installing the package; see README.Debian."
  deb "$r" tether "$arch"

  # tether-server: the key server, its unit, user and default options.
  r=$work/root-server-$arch
  install -d "$r/DEBIAN"
  put 0755 "$bin/tether-server" "$r/usr/bin/tether-server"
  put 0644 packaging/deb/tether-server.service "$r/lib/systemd/system/tether-server.service"
  put 0644 packaging/deb/tether-server.sysusers "$r/usr/lib/sysusers.d/tether-server.conf"
  put 0644 packaging/deb/tether-server.default "$r/etc/default/tether-server"
  echo /etc/default/tether-server > "$r/DEBIAN/conffiles"
  man_pages "$work/docs/server/man1" "$r"
  put 0644 "$work/docs/bash/tether-server" "$r/usr/share/bash-completion/completions/tether-server"
  put 0644 "$work/docs/zsh/_tether-server" "$r/usr/share/zsh/vendor-completions/_tether-server"
  put 0644 "$work/docs/fish/tether-server.fish" "$r/usr/share/fish/vendor_completions.d/tether-server.fish"
  doc "$r" tether-server ./cmd/tether-server
  put 0644 packaging/deb/README.Debian.server "$r/usr/share/doc/tether-server/README.Debian"
  put 0755 packaging/deb/tether-server.postinst "$r/DEBIAN/postinst"
  put 0755 packaging/deb/tether-server.prerm "$r/DEBIAN/prerm"
  put 0755 packaging/deb/tether-server.postrm "$r/DEBIAN/postrm"
  put 0644 packaging/deb/tether-server.lintian-overrides "$r/usr/share/lintian/overrides/tether-server"
  for f in "$r"/usr/share/man/man1/tether-admin-*.1.gz; do
    echo "tether-server: spare-manual-page [${f#"$r"/}]"
  done >> "$r/usr/share/lintian/overrides/tether-server"
  control tether-server "$arch" "$r" \
    "Depends: passwd" \
    "Suggests: tether" \
    "Description: network-bound disk encryption key server (Tang compatible)" \
    " tether-server is a Tang server (stock clevis clients bind to and unlock" \
    " from it as from tangd, and it takes over a tangd's keys) with a managed" \
    " mode for fleets: device identities, approval, policy, revocation, a" \
    " hash-chained audit log, a dashboard, SQLite or PostgreSQL storage." \
    " ." \
    " The service runs as the _tether user with its data in /var/lib/tether;" \
    " it is not started by installing the package (see README.Debian)."
  deb "$r" tether-server "$arch"
done

if $lintian; then
  command -v lintian >/dev/null || { echo "package: error: lintian is missing" >&2; echo "package: hint: run scripts/setup.sh --test" >&2; exit 1; }
  status=0
  for d in "$out"/*_"$version"_*.deb; do
    echo "package: lintian $d" >&2
    lintian --fail-on error,warning "$d" >&2 || status=1
  done
  exit "$status"
fi

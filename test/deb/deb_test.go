// Package deb tests the Debian packages scripts/package.sh builds: they
// install into a copy of the real Debian 12 tree test/realboot boots,
// with dpkg and apt as a user would, and leave nothing behind when purged.
package deb_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/test/realboot"
)

const version = "9.9.9~pkgtest1"

// buildPackages runs scripts/package.sh for amd64 (with lintian when it
// is installed) and returns the directory with the two .deb files.
//
// $TETHER_TEST_DEBS names a directory with packages of this version built
// before (scripts/package.sh -a amd64 -v 9.9.9~pkgtest1 -o DIR), to test
// the maintainer scripts again without building.
func buildPackages(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("TETHER_TEST_DEBS"); d != "" {
		return d
	}
	out := t.TempDir()
	args := []string{"-a", "amd64", "-v", version, "-o", out}
	if _, err := exec.LookPath("lintian"); err == nil {
		args = append(args, "--lintian")
	} else {
		t.Log("lintian is not installed: the packages are not linted (scripts/setup.sh --test installs it)")
	}
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "scripts/package.sh"), args...)
	cmd.Dir = testenv.RepoRoot()
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/package.sh %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	for _, p := range []string{"tether", "tether-server"} {
		if _, err := os.Stat(filepath.Join(out, p+"_"+version+"_amd64.deb")); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// chroot runs script in tree with /proc, /sys, /dev and a /run tmpfs
// mounted in a private mount namespace, as realboot's Guest.Chroot does.
func chroot(t *testing.T, tree, script string) (string, error) {
	t.Helper()
	mounts := fmt.Sprintf("mount -t proc proc %[1]s/proc && mount -t sysfs sys %[1]s/sys && mount --bind /dev %[1]s/dev && mount -t tmpfs tmpfs %[1]s/run && exec chroot %[1]s /bin/sh -eus", tree)
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", mounts)
	cmd.Stdin = strings.NewReader(script)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "HOME=/root", "DEBIAN_FRONTEND=noninteractive"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// files lists the tree's paths that a package could leave behind: not the
// package manager's own records, caches and logs.
const listFiles = `find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run -o -path /tmp \
  -o -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/cache -o -path /var/log \) -prune -o -print | sort`

func TestInstallPurge(t *testing.T) {
	testenv.RequireRoot(t)
	for _, c := range []string{"unshare", "dpkg-deb", "mmdebstrap", "cp"} {
		testenv.RequireCmd(t, c)
	}
	if testing.Short() {
		t.Skip("builds the packages and a Debian tree")
	}
	debs := buildPackages(t)
	base := realboot.Base(t, realboot.InitramfsTools)
	tree := filepath.Join(t.TempDir(), "tree")
	if b, err := exec.Command("cp", "-a", base, tree).CombinedOutput(); err != nil {
		t.Fatalf("copy the base tree: %v\n%s", err, b)
	}
	if b, err := exec.Command("cp", "-L", "/etc/resolv.conf", filepath.Join(tree, "etc/resolv.conf")).CombinedOutput(); err != nil {
		t.Fatalf("resolv.conf: %v\n%s", err, b)
	}
	before, err := chroot(t, tree, listFiles)
	if err != nil {
		t.Fatalf("list files: %v\n%s", err, before)
	}
	if err := os.MkdirAll(filepath.Join(tree, "tmp/debs"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"tether", "tether-server"} {
		name := p + "_" + version + "_amd64.deb"
		b, err := os.ReadFile(filepath.Join(debs, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, "tmp/debs", name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	port := strings.TrimPrefix(testenv.FreePort(t), "127.0.0.1:")
	script := strings.NewReplacer("@VERSION@", version, "@PORT@", port).Replace(installScript)
	out, err := chroot(t, tree, script)
	t.Logf("in the chroot:\n%s", out)
	if err != nil {
		t.Fatalf("install, use, remove and purge in the chroot: %v", err)
	}
	if !strings.Contains(out, "@@ALL CHECKS PASSED") {
		t.Fatal("the chroot script did not finish")
	}
	after, err := chroot(t, tree, "rm -rf /tmp/debs\n"+listFiles)
	if err != nil {
		t.Fatalf("list files: %v\n%s", err, after)
	}
	// The account stays on purge, as Debian leaves system users; the
	// shadow tools' backup copies (passwd- ...) come with it.
	left := diff(before, after, "/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-")
	if len(left) > 0 {
		t.Errorf("dpkg --purge left these behind (or removed them):\n%s", strings.Join(left, "\n"))
	}
}

func diff(before, after string, ignore ...string) []string {
	set := func(s string) map[string]bool {
		m := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
			m[l] = true
		}
		for _, i := range ignore {
			delete(m, i)
		}
		return m
	}
	b, a := set(before), set(after)
	var out []string
	for p := range a {
		if !b[p] {
			out = append(out, "+ "+p)
		}
	}
	for p := range b {
		if !a[p] {
			out = append(out, "- "+p)
		}
	}
	sort.Strings(out)
	return out
}

// installScript runs in the chroot (sh -eu): every check that fails stops
// it with a message.
const installScript = `
fail() { echo "FAIL: $*"; exit 1; }
v=@VERSION@
echo "== dpkg -i, then apt-get -f install"
dpkg -i /tmp/debs/tether_${v}_amd64.deb /tmp/debs/tether-server_${v}_amd64.deb
apt-get update -q >/dev/null
apt-get -f install -y -q
for p in tether tether-server; do
    s=$(dpkg-query -W -f='${Status} ${Version}' $p)
    [ "$s" = "install ok installed $v" ] || fail "$p: $s"
done

echo "== the binaries run and say their version"
for b in tether tether-server tether-smb; do
    $b --version | head -1 | grep -qx "$b $v" || fail "$b --version: $($b --version)"
done
tether version | grep -q "revision: [0-9a-f]\{40\}" || fail "tether version: no commit: $(tether version)"

echo "== units, hooks, manuals, completions in place; nothing enabled"
for u in tether-keyd.socket tether-keyd.service tether-askpass.path tether-askpass.service \
    tether-agent.service tether-agent@.service tether-secret@.service tether-heal.service tether-server.service; do
    [ -f /lib/systemd/system/$u ] || fail "missing unit $u"
done
grep -q '^ExecStart=/usr/bin/tether keyd' /lib/systemd/system/tether-keyd.service || fail "keyd unit does not run /usr/bin/tether"
grep -q '^After=tether-keyd.socket' '/lib/systemd/system/systemd-cryptsetup@.service.d/tether.conf' || fail "cryptsetup drop-in"
grep -q '^Wants=' '/lib/systemd/system/systemd-cryptsetup@.service.d/tether.conf' && fail "the cryptsetup drop-in pulls in the socket without consent"
for u in tether-keyd.socket tether-askpass.path tether-agent.service tether-heal.service tether-server.service; do
    st=$(systemctl is-enabled $u 2>&1 || true)
    [ "$st" = disabled ] || fail "$u is $st, want disabled"
done
# (tether-test.service is the realboot harness's own.)
find /etc/systemd/system -name 'tether*' ! -name 'tether-test.service' | grep . && fail "units were enabled"
systemd-analyze verify --man=no /lib/systemd/system/tether-server.service /lib/systemd/system/tether-keyd.socket \
    /lib/systemd/system/tether-askpass.path /lib/systemd/system/tether-agent.service 2>&1 | grep -v 'Failed to .*ubus\|bus\|/run/systemd' | grep . &&
    fail "systemd-analyze verify complains"
for f in /usr/share/initramfs-tools/hooks/tether /usr/share/initramfs-tools/scripts/local-top/tether \
    /usr/share/initramfs-tools/conf-hooks.d/tether /usr/lib/dracut/modules.d/60tether/module-setup.sh \
    /usr/share/man/man1/tether.1.gz /usr/share/man/man1/tether-luks-bind.1.gz /usr/share/man/man1/tether-server.1.gz \
    /usr/share/man/man1/tether-adv.1.gz /usr/share/bash-completion/completions/tether \
    /usr/share/zsh/vendor-completions/_tether /usr/share/fish/vendor_completions.d/tether.fish \
    /usr/share/doc/tether/copyright /usr/share/doc/tether-server/README.Debian; do
    [ -f "$f" ] || fail "missing $f"
done
zcat /usr/share/man/man1/tether-adv.1.gz | grep -qF 'tether\-adv \- show' || fail "tether-adv(1) has no NAME line"
bash -c '. /usr/share/bash-completion/completions/tether; COMP_WORDS=(tether luks b); COMP_CWORD=2; _tether; [ "${COMPREPLY[*]}" = bind ]' ||
    fail "bash completion of the installed script"

echo "== update-initramfs picks up the hook; the image is root-only"
update-initramfs -u
img=$(ls /boot/initrd.img-* | head -1)
lsinitramfs "$img" | grep -q 'sbin/tether$' || fail "tether is not in $img"
lsinitramfs "$img" | grep -q 'sbin/tether-smb$' || fail "tether-smb is not in $img"
lsinitramfs "$img" | grep -q 'scripts/local-top/tether$' || fail "the local-top script is not in $img"
[ "$(stat -c %a "$img")" = 600 ] || fail "$img is mode $(stat -c %a "$img"), want 600 (conf-hooks.d UMASK)"

echo "== the server's account and data; it serves as _tether"
getent passwd _tether | grep -q ':/var/lib/tether:/usr/sbin/nologin$' || fail "user _tether: $(getent passwd _tether)"
[ "$(stat -c '%U %G %a' /var/lib/tether)" = "_tether _tether 700" ] || fail "/var/lib/tether: $(stat -c '%U %G %a' /var/lib/tether)"
setpriv --reuid=_tether --regid=_tether --clear-groups tether-server server --listen 127.0.0.1:@PORT@ --data /var/lib/tether >/tmp/server.log 2>&1 &
srv=$!
i=0
until tether adv --json http://127.0.0.1:@PORT@ >/tmp/adv.json 2>/dev/null; do
    i=$((i+1)); [ $i -lt 100 ] || { cat /tmp/server.log; fail "the server did not answer"; }
    sleep 0.1
done
kill $srv; wait $srv || true
grep -q '"S256"' /tmp/adv.json || fail "tether adv: $(cat /tmp/adv.json)"
[ -z "$(find /var/lib/tether ! -user _tether)" ] || fail "files not owned by _tether: $(find /var/lib/tether ! -user _tether)"
rm -f /tmp/server.log /tmp/adv.json

echo "== a changed conffile survives an upgrade (reinstall)"
echo 'TETHER_SERVER_OPTS="--listen :7600"' >> /etc/default/tether-server
dpkg -i /tmp/debs/tether-server_${v}_amd64.deb
grep -q 'listen :7600' /etc/default/tether-server || fail "the upgrade replaced the changed /etc/default/tether-server"
[ -d /var/lib/tether/tang ] || fail "the upgrade lost the server's keys"

echo "== remove keeps data and config; purge deletes them"
dpkg --remove tether-server
[ -d /var/lib/tether/tang ] || fail "remove deleted the server's keys"
[ -f /etc/default/tether-server ] || fail "remove deleted the conffile"
mkdir -p /var/lib/tether/luks && echo state > /var/lib/tether/luks/keep
dpkg --purge tether-server 2>&1 | tee /tmp/purge.log
grep -q 'deleting the key server.s data in /var/lib/tether' /tmp/purge.log || fail "purge said nothing about the data it deleted"
[ ! -e /var/lib/tether/tang ] || fail "purge left the server's keys"
[ ! -e /etc/default/tether-server ] || fail "purge left the conffile"
[ -f /var/lib/tether/luks/keep ] || fail "purging the server deleted the client's LUKS state"
rm -rf /var/lib/tether /tmp/purge.log
dpkg --purge tether
lsinitramfs "$img" | grep -q 'sbin/tether$' && fail "the initramfs still holds tether after the package is gone"
echo "@@ALL CHECKS PASSED"
`

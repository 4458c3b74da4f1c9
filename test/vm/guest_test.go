package vm

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestGuest boots one guest with two LUKS2 disks bound to a tether server
// on the host: /dev/vda to the live server (http://10.0.2.2:PORT), /dev/vdb
// to a port where nothing listens (the server is down). In the guest:
//
//   - unlock: tether opens vda with real dm-crypt, the file is read;
//   - down: vdb stays locked and the log says why, within the deadline;
//   - run: tether luks run mounts vda, runs a command, and closes the
//     volume afterwards — also when the command fails and when tether is
//     sent SIGTERM while the command runs;
//   - keyd: the real systemd-cryptsetup gets vda's key from tether keyd's
//     socket and opens it; vdb gets no key at the deadline;
//   - askpass: the real systemd-cryptsetup, with no key file, asks the
//     password agents, and tether askpass answers.
//
// Run it alone with: go test ./test/vm -run TestGuest -v
func TestGuest(t *testing.T) {
	k := Require(t)
	testenv.RequireRoot(t)
	const file = "hello from the encrypted disk"
	live := MakeLUKSImage(t, map[string]string{"hello.txt": file}, "recovery")
	dead := MakeLUKSImage(t, map[string]string{"hello.txt": "must stay locked"}, "recovery")
	srv := testenv.StartServer(t, "")
	adv := FetchAdv(t, srv.URL)
	port := srv.URL[strings.LastIndex(srv.URL, ":")+1:]
	deadPort := testenv.FreePort(t)
	deadPort = deadPort[strings.LastIndex(deadPort, ":")+1:]
	bin := testenv.TetherBin(t)
	BindTang(t, bin, live, "recovery", "http://10.0.2.2:"+port, adv, 1)
	BindTang(t, bin, dead, "recovery", "http://10.0.2.2:"+deadPort, adv, 1)

	binaries := []string{}
	sdc := "/lib/systemd/systemd-cryptsetup"
	haveSDC := false
	if _, err := os.Stat(sdc); err == nil {
		binaries, haveSDC = append(binaries, sdc), true
	}
	script := guestScript(haveSDC)
	res := Boot(t, Config{
		Kernel:   k,
		Script:   script,
		Disks:    []string{live, dead},
		Binaries: binaries,
		Files: map[string][]byte{
			"/etc/crypttab": []byte("data /dev/vda /run/tether/keyd.sock luks\ndead /dev/vdb /run/tether/keyd.sock luks\n"),
		},
	})
	t.Logf("guest ran for %s", res.Duration.Round(100*time.Millisecond))
	fail := func(format string, a ...any) {
		t.Helper()
		t.Errorf(format, a...)
	}
	t.Run("unlock", func(t *testing.T) {
		if r := res.Markers("UNLOCK-READ"); len(r) == 0 || r[0] != file {
			fail("read %q from the unlocked disk, want %q", r, file)
		}
		if !res.Has("UNLOCK-CLOSED") {
			fail("the volume was not closed after the read")
		}
	})
	t.Run("crypttab open", func(t *testing.T) {
		// What the initramfs scripts run: data opens, dead is left closed
		// with a line saying why, and the exit status says so.
		if got := res.Markers("OPENALL-STATUS"); len(got) == 0 || got[0] != "1" {
			fail("crypttab open exit status %q, want 1", got)
		}
		if !res.Has("OPENALL-ONLY-DATA") || !strings.Contains(res.Console, `tether: volume "dead" (/dev/vdb) left closed after 5`) {
			fail("crypttab open did not open data and leave dead closed")
		}
	})
	t.Run("server down", func(t *testing.T) {
		if !res.Has("DOWN-FAILED") || res.Has("DOWN-OPENED") {
			fail("the disk bound to a dead server was opened, or tether did not fail")
		}
		if !res.Has("DOWN-LOCKED") {
			fail("/dev/mapper has a mapping for the dead disk")
		}
		secs := res.Markers("DOWN-SECONDS")
		if len(secs) == 0 {
			fail("no duration")
		} else if s, _ := strconv.Atoi(secs[0]); s > 5+3 {
			fail("tether gave up after %ds, deadline 5s", s)
		}
		if !strings.Contains(res.Console, "gave up because the deadline passed") || !strings.Contains(res.Console, "10.0.2.2:"+deadPort) {
			fail("the log does not say what it waited for and why it gave up")
		}
	})
	t.Run("luks run", func(t *testing.T) {
		if r := res.Markers("RUN-READ"); len(r) == 0 || r[0] != file {
			fail("luks run: command read %q", r)
		}
		for _, m := range []string{"RUN-OK-CLOSED", "RUN-FAIL-STATUS 1", "RUN-FAIL-CLOSED", "RUN-TERM-STARTED", "RUN-TERM-CLOSED", "RUN-TERM-UNMOUNTED"} {
			name, want, _ := strings.Cut(m, " ")
			got := res.Markers(name)
			if len(got) == 0 || (want != "" && got[0] != want) {
				fail("marker %s: got %q", m, got)
			}
		}
	})
	t.Run("keyd", func(t *testing.T) {
		if !haveSDC {
			testenv.Require(t, false, "systemd-cryptsetup is not installed")
		}
		if r := res.Markers("KEYD-READ"); len(r) == 0 || r[0] != file {
			fail("systemd-cryptsetup + keyd: read %q", r)
		}
		if !res.Has("KEYD-DEAD-LOCKED") {
			fail("the dead volume was opened through keyd")
		}
		if !strings.Contains(res.Console, `keyd: volume "data": key sent`) || !strings.Contains(res.Console, `keyd: volume "dead": no key sent after`) {
			fail("keyd's log lines are missing")
		}
	})
	t.Run("askpass", func(t *testing.T) {
		if !haveSDC {
			testenv.Require(t, false, "systemd-cryptsetup is not installed")
		}
		if r := res.Markers("ASKPASS-READ"); len(r) == 0 || r[0] != file {
			fail("systemd-cryptsetup + askpass: read %q", r)
		}
		if !strings.Contains(res.Console, "askpass: cryptsetup:") || !strings.Contains(res.Console, ": answered (token 0, keyslot 1)") {
			fail("askpass's log line is missing")
		}
	})
	if t.Failed() || testing.Verbose() {
		t.Logf("console:\n%s", res.Console)
	}
}

func guestScript(haveSDC bool) string {
	s := `
mapped() { ls /dev/mapper | grep -v '^control$' | tr '\n' ' '; }

echo "== unlock"
if tether luks unlock --help >/dev/null 2>&1; then
  tether luks unlock -d /dev/vda -n data
else
  # fallback while luks unlock is missing: the same recovery via crypttab open
  tether crypttab open --crypttab /etc/crypttab --deadline 20s data
fi
mount /dev/mapper/data /mnt && echo "@@UNLOCK-READ $(cat /mnt/hello.txt)"
umount /mnt
cryptsetup close data && [ -z "$(mapped)" ] && echo "@@UNLOCK-CLOSED"

echo "== crypttab open"
tether crypttab open --crypttab /etc/crypttab --deadline 5s --timeout 2s
echo "@@OPENALL-STATUS $?"
[ "$(mapped)" = "data " ] && echo "@@OPENALL-ONLY-DATA"
cryptsetup close data

echo "== down"
t0=$(date +%s)
if tether luks run -d /dev/vdb --mount /mnt --deadline 5s --timeout 2s -- cat /mnt/hello.txt; then
  echo "@@DOWN-OPENED"
else
  echo "@@DOWN-FAILED"
fi
echo "@@DOWN-SECONDS $(( $(date +%s) - t0 ))"
[ -z "$(mapped)" ] && echo "@@DOWN-LOCKED"

echo "== run"
tether luks run -d /dev/vda --mount /mnt -- sh -c 'echo "@@RUN-READ $(cat hello.txt)"'
[ -z "$(mapped)" ] && ! grep -q ' /mnt ' /proc/mounts && echo "@@RUN-OK-CLOSED"
tether luks run -d /dev/vda --mount /mnt -- sh -c 'exit 3'
echo "@@RUN-FAIL-STATUS $?"
[ -z "$(mapped)" ] && echo "@@RUN-FAIL-CLOSED"
tether luks run -d /dev/vda --mount /mnt -- sh -c 'echo started > /tmp/started; sleep 60' &
pid=$!
i=0; while [ ! -f /tmp/started ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
[ -f /tmp/started ] && echo "@@RUN-TERM-STARTED"
kill -TERM $pid
wait $pid
echo "tether exited with $? after SIGTERM"
[ -z "$(mapped)" ] && echo "@@RUN-TERM-CLOSED"
grep -q ' /mnt ' /proc/mounts || echo "@@RUN-TERM-UNMOUNTED"
`
	if haveSDC {
		s += `
echo "== keyd"
mkdir -p /run/tether
tether keyd --socket /run/tether/keyd.sock --crypttab /etc/crypttab --deadline 5s --timeout 2s &
kpid=$!
i=0; while [ ! -S /run/tether/keyd.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
/lib/systemd/systemd-cryptsetup attach data /dev/vda /run/tether/keyd.sock luks,headless
mount /dev/mapper/data /mnt && echo "@@KEYD-READ $(cat /mnt/hello.txt)"
umount /mnt
/lib/systemd/systemd-cryptsetup detach data
/lib/systemd/systemd-cryptsetup attach dead /dev/vdb /run/tether/keyd.sock luks,headless,tries=1
echo "systemd-cryptsetup attach dead: exit $?"
[ -z "$(mapped)" ] && echo "@@KEYD-DEAD-LOCKED"
kill $kpid

echo "== askpass"
tether askpass --crypttab /etc/crypttab --deadline 10s --timeout 2s &
apid=$!
# stdin is not a terminal, so systemd-cryptsetup asks the password agents.
/lib/systemd/systemd-cryptsetup attach data /dev/vda none luks,timeout=30 </dev/null
mount /dev/mapper/data /mnt && echo "@@ASKPASS-READ $(cat /mnt/hello.txt)"
umount /mnt
/lib/systemd/systemd-cryptsetup detach data
kill $apid
`
	}
	return s
}

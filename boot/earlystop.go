package boot

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// RetryPIDFile names the process retrying behind the prompt.
const RetryPIDFile = "retry.pid"

// StopEarly ends everything tether started in the initramfs, before the
// real system starts: the retry behind the prompt, the network setup (and
// its ipconfig), and — when tether brought the network up — the addresses
// it configured, so the booted system's own networking starts from a clean
// card and no initramfs process survives into it. It returns what it did,
// one line each.
func StopEarly(dir string, net EarlyNet) []string {
	if dir == "" {
		dir = "/run/tether"
	}
	var did []string
	if pid := readPID(filepath.Join(dir, RetryPIDFile)); pid > 0 && isTether(pid) {
		stopPID(pid, false)
		did = append(did, "stopped the retry behind the prompt")
	}
	os.Remove(filepath.Join(dir, RetryPIDFile))
	if pid := readPID(filepath.Join(dir, "net.pid")); pid > 0 {
		if syscall.Kill(-pid, 0) == nil {
			stopPID(pid, true)
			did = append(did, "stopped the network setup")
		}
	}
	os.Remove(filepath.Join(dir, "net.pid"))
	if _, err := os.Stat(filepath.Join(dir, "net.start")); err == nil {
		for _, l := range net.Leases() {
			if err := unconfigure(l.Device); err == nil {
				did = append(did, "released "+l.Device+" ("+l.Addr+")")
			}
			os.Remove(filepath.Join(net.run(), "net-"+l.Device+".conf"))
		}
	}
	return did
}

func isTether(pid int) bool {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	return err == nil && strings.Contains(strings.SplitN(string(data), "\x00", 2)[0], "tether")
}

// stopPID sends SIGTERM (to the group if group), then SIGKILL if it is
// still there after a second.
func stopPID(pid int, group bool) {
	target := pid
	if group {
		target = -pid
	}
	syscall.Kill(target, syscall.SIGTERM)
	for i := 0; i < 20; i++ {
		if syscall.Kill(target, 0) != nil || (!group && zombie(pid)) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	syscall.Kill(target, syscall.SIGKILL)
}

// unconfigure removes the IPv4 address from dev and takes it down (what
// ifconfig dev 0.0.0.0 down does), with ioctls: the initramfs may have no
// ip command.
func unconfigure(dev string) error {
	if _, err := net.InterfaceByName(dev); err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(dev)
	if err != nil {
		return err
	}
	ifr.SetInet4Addr([]byte{0, 0, 0, 0})
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFADDR, ifr); err != nil {
		return err
	}
	fl, err := unix.NewIfreq(dev)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, fl); err != nil {
		return err
	}
	fl.SetUint16(fl.Uint16() &^ unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, fl)
}

package boot

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EarlyNet is the network as an initramfs sees it: the cards under SysNet
// and the leases initramfs-tools' ipconfig wrote to RunDir/net-DEV.conf. It
// only reads files, so the same code describes a guest's network and a
// test's fake tree.
type EarlyNet struct {
	SysNet string // "" means /sys/class/net
	RunDir string // "" means /run
	// HasAddr, if set, also counts a card as configured when it has an
	// address by other means than a lease file: dracut's
	// systemd-networkd writes none (KernelHasAddr asks the kernel).
	HasAddr func(card string) bool
}

// KernelHasAddr reports whether the kernel has a global unicast address
// on card (DHCP or static, whoever configured it).
func KernelHasAddr(card string) bool {
	ifc, err := net.InterfaceByName(card)
	if err != nil {
		return false
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.IsGlobalUnicast() {
			return true
		}
	}
	return false
}

// NetIface is one network card.
type NetIface struct {
	Name    string
	Carrier bool // the cable (or the virtual link) is connected
}

// Lease is one ipconfig result file: /run/net-DEV.conf.
type Lease struct {
	Device string
	Addr   string
	DNS    []string
	Search []string
	Proto  string // dhcp, none (static), ...
}

func (n EarlyNet) sys() string {
	if n.SysNet == "" {
		return "/sys/class/net"
	}
	return n.SysNet
}

func (n EarlyNet) run() string {
	if n.RunDir == "" {
		return "/run"
	}
	return n.RunDir
}

// Interfaces lists the cards ipconfig would use: not loopback, and
// broadcast or point-to-point (initramfs-tools' _usable_netdev_exists).
func (n EarlyNet) Interfaces() []NetIface {
	ents, _ := os.ReadDir(n.sys())
	var out []NetIface
	for _, e := range ents {
		dir := filepath.Join(n.sys(), e.Name())
		raw, err := os.ReadFile(filepath.Join(dir, "flags"))
		if err != nil {
			continue
		}
		flags, err := strconv.ParseUint(strings.TrimSpace(string(raw)), 0, 32)
		if err != nil || flags&0x8 != 0 || flags&0x12 == 0 {
			continue
		}
		// carrier cannot be read while the card is down: no link then.
		c, _ := os.ReadFile(filepath.Join(dir, "carrier"))
		out = append(out, NetIface{Name: e.Name(), Carrier: strings.TrimSpace(string(c)) == "1"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Leases reads every /run/net-*.conf that names an address. A file that
// cannot be parsed is skipped: it is never sourced, so it cannot break the
// boot.
func (n EarlyNet) Leases() []Lease {
	files, _ := filepath.Glob(filepath.Join(n.run(), "net-*.conf"))
	sort.Strings(files)
	var out []Lease
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		l, err := ParseNetConf(data)
		if err != nil || l.Addr == "" {
			continue
		}
		// The file's own name is the device ipconfig configured.
		l.Device = strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "net-"), ".conf")
		out = append(out, l)
	}
	return out
}

// ParseNetConf parses ipconfig's KEY='value' lines (klibc's ipconfig
// writes them for the shell to source; tether reads them instead, so a
// truncated or hostile file is data, not code).
func ParseNetConf(data []byte) (Lease, error) {
	var l Lease
	vars := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || k == "" || strings.TrimLeft(k, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_") != "" {
			continue // not ipconfig's: ignored, never interpreted
		}
		if len(v) >= 2 && (v[0] == '\'' && v[len(v)-1] == '\'' || v[0] == '"' && v[len(v)-1] == '"') {
			v = v[1 : len(v)-1]
		}
		vars[k] = v
	}
	if err := sc.Err(); err != nil {
		return Lease{}, err
	}
	if d := vars["DEVICE"]; len(d) <= 15 && !strings.ContainsAny(d, "/ \t\x00") && d != "." && d != ".." {
		l.Device = d
	}
	if a := net.ParseIP(vars["IPV4ADDR"]); a != nil && !a.IsUnspecified() {
		l.Addr = a.String()
	}
	for _, k := range []string{"IPV4DNS0", "IPV4DNS1", "IPV6DNS0", "IPV6DNS1"} {
		if d := net.ParseIP(vars[k]); d != nil && !d.IsUnspecified() {
			l.DNS = append(l.DNS, d.String())
		}
	}
	for _, k := range []string{"DOMAINSEARCH", "DNSDOMAIN"} {
		for _, d := range strings.Fields(vars[k]) {
			if !contains(l.Search, d) && validDomain(d) {
				l.Search = append(l.Search, d)
			}
		}
	}
	l.Proto = vars["PROTO"]
	return l, nil
}

// validDomain keeps what resolv.conf's search line can hold.
func validDomain(d string) bool {
	return len(d) <= 253 && strings.Trim(d, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// ResolvConf is the /etc/resolv.conf that lets Go's resolver use the name
// servers the leases name.
func ResolvConf(leases []Lease) []byte {
	var b strings.Builder
	var search []string
	seen := map[string]bool{}
	for _, l := range leases {
		for _, d := range l.DNS {
			if !seen[d] {
				seen[d] = true
				fmt.Fprintf(&b, "nameserver %s\n", d)
			}
		}
		for _, s := range l.Search {
			if !contains(search, s) {
				search = append(search, s)
			}
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	return []byte(b.String())
}

// Problem says why the network is not usable yet, in words an owner can
// act on, or "" when some card has an address. since is how long the
// network has been waited for.
func (n EarlyNet) Problem(since time.Duration) string {
	if len(n.Leases()) > 0 {
		return ""
	}
	ifs := n.Interfaces()
	if len(ifs) == 0 {
		return "no network interface (no driver for the card, or no card)"
	}
	var parts []string
	for _, i := range ifs {
		if n.HasAddr != nil && n.HasAddr(i.Name) {
			return ""
		}
	}
	for _, i := range ifs {
		if !i.Carrier {
			parts = append(parts, "no link on "+i.Name+" (cable or switch)")
		} else {
			parts = append(parts, fmt.Sprintf("no DHCP lease on %s after %s", i.Name, since.Round(time.Second)))
		}
	}
	return strings.Join(parts, "; ")
}

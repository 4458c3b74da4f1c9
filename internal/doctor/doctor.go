// Package doctor checks whether a machine is ready to unlock its bound
// volumes at boot: the units, the crypttab lines, the initramfs, each
// volume's bindings and the key sources they need now. Every problem it
// finds comes with the command that fixes it on that input, so that a
// person who never read crypttab(5) can act on it.
//
// It only reads: the system's files (under Options.Root), LUKS2 headers,
// the key servers' advertisements, the TPM's PCRs. The one thing it
// decrypts is a binding's passphrase, in memory, to check that it opens
// its keyslot (cryptsetup open --test-passphrase), as tether luks unlock
// --test does; managed bindings are not tried (an unlock request is an
// event on the server).
package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	"github.com/tether-nbde/tether/pin/tpm2"
	tangproto "github.com/tether-nbde/tether/tang"
)

// Options say what to check.
type Options struct {
	// Root is the system to check: "/" (or "") is this one; another
	// directory is a system installed there (an image, a chroot). Devices
	// and key sources are still reached from here.
	Root string
	// Timeout bounds each network exchange.
	Timeout time.Duration
	// TCTI names the TPM; empty means the environment's (tpm.TCTIFromEnv).
	TCTI string
	// Devices are volumes to check besides those of crypttab.
	Devices []string
	// OK, if not nil, gets one line per check that passed.
	OK io.Writer
}

// Problem is one thing that stops (or may stop) a volume from unlocking
// at boot.
type Problem struct {
	Subject string // what it is about: a volume, "units", an initramfs image
	What    string // what is wrong and what it causes
	Fix     string // the command that fixes it
}

func (p Problem) String() string { return p.Subject + ": " + p.What + "; fix: " + p.Fix }

// doctor holds one run's state.
type doctor struct {
	o        Options
	problems []Problem
	runner   *luks.Runner
	advs     map[string]advResult
}

type advResult struct {
	ks  *jose.KeySet
	ver []*jose.JWK
	err error
}

func (d *doctor) problem(subject, fix, format string, a ...any) {
	d.problems = append(d.problems, Problem{Subject: subject, What: fmt.Sprintf(format, a...), Fix: fix})
}

func (d *doctor) ok(subject, format string, a ...any) {
	if d.o.OK != nil {
		fmt.Fprintf(d.o.OK, "ok: %s: %s\n", subject, fmt.Sprintf(format, a...))
	}
}

// path is p on the checked system.
func (d *doctor) path(p string) string { return filepath.Join(d.o.Root, p) }

func (d *doctor) live() bool { return d.o.Root == "" || d.o.Root == "/" }

// rootFlag is what a tether command needs to act on the checked system.
func (d *doctor) rootFlag() string {
	if d.live() {
		return ""
	}
	return " --root " + shellQuote(d.o.Root)
}

// installFlags are what "tether install" needs to write into the checked
// system: --root, and --bin for the tether installed there (this binary's
// own path means nothing inside an image).
func (d *doctor) installFlags() string {
	if d.live() {
		return ""
	}
	f := d.rootFlag()
	for _, p := range []string{"/usr/bin/tether", "/usr/sbin/tether", "/usr/local/bin/tether", "/usr/local/sbin/tether", "/bin/tether", "/sbin/tether"} {
		if fi, err := os.Stat(d.path(p)); err == nil && fi.Mode()&0o111 != 0 {
			return f + " --bin " + p
		}
	}
	return f
}

// systemctl is a systemctl command line for the checked system.
func (d *doctor) systemctl(args string) string {
	if d.live() {
		return "systemctl " + args
	}
	return "systemctl --root " + shellQuote(d.o.Root) + " " + args
}

// inRoot runs a command of the checked system (update-initramfs, dracut).
func (d *doctor) inRoot(cmd string) string {
	if d.live() {
		return cmd
	}
	return "chroot " + shellQuote(d.o.Root) + " " + cmd
}

// volume is a LUKS volume to check, with its crypttab line if it has one.
type volume struct {
	entry   *boot.CrypttabEntry
	subject string
	dev     string // path on this machine
	h       *luks.Header
	binds   []luks.Binding
	pins    map[string]bool // pins of every leaf of every binding
	root    bool            // opened by the initramfs
	keyd    bool            // its key comes from keyd's socket (which asks for PINs)
	err     error           // why the header could not be read
}

// Check runs every check and returns the problems found, in the order
// they were found: units and crypttab, then volumes, then initramfs.
func Check(ctx context.Context, o Options) []Problem {
	if o.Root == "" {
		o.Root = "/"
	}
	if o.Timeout <= 0 {
		o.Timeout = pin.DefaultTimeout
	}
	d := &doctor{o: o, advs: map[string]advResult{}}
	vols := d.volumes()
	if len(vols) == 0 {
		d.problem("crypttab", "tether setup", "no volume of %s has tether or clevis bindings, so tether unlocks nothing at boot", d.path("/etc/crypttab"))
		return d.problems
	}
	d.checkUnits(vols)
	for _, v := range vols {
		d.checkBindings(ctx, v)
	}
	d.checkInitramfs(vols)
	return d.problems
}

// volumes reads crypttab and the volumes it names, and those of
// Options.Devices. Lines of volumes without bindings are not tether's,
// unless they point at tether's socket.
func (d *doctor) volumes() []*volume {
	tab := d.path("/etc/crypttab")
	ents, err := boot.ReadCrypttab(tab)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.problem("crypttab", "${EDITOR:-vi} "+shellQuote(tab)+"  # correct the line the error names (crypttab(5))", "read %s: %v", tab, err)
	}
	rootName := d.rootMapperName()
	sockets := d.keydSockets()
	var out []*volume
	seen := map[string]bool{}
	for i := range ents {
		e := &ents[i]
		subject := "volume " + e.Name
		_, usesSocket := sockets[e.KeyFile]
		dev, err := d.resolve(e.Device)
		if err != nil {
			if usesSocket || strings.HasPrefix(e.KeyFile, "/run/tether/") {
				d.problem(subject, "blkid  # lists the devices and their UUIDs: correct field 2 of the line in "+tab,
					"its device %s is not here: %v", e.Device, err)
			}
			continue
		}
		v := &volume{entry: e, subject: subject, dev: dev}
		if !d.readVolume(v) {
			if usesSocket {
				d.problem(subject, "lsblk -f  # find the volume's LUKS2 device DEV, then: tether crypttab -d DEV -n "+e.Name+" --write "+shellQuote(tab),
					"its line points at tether's socket %s but %s is not a LUKS2 volume tether can read (%v)", e.KeyFile, dev, v.readErr())
			}
			continue
		}
		if len(v.binds) == 0 && !usesSocket {
			d.ok(subject, "no bindings: not tether's")
			continue
		}
		_, early := e.Option("initramfs")
		v.root = early || (rootName != "" && e.Name == rootName)
		v.keyd = usesSocket && !v.root
		seen[dev] = true
		out = append(out, v)
	}
	for _, dev := range d.o.Devices {
		abs, err := filepath.Abs(dev)
		if err == nil && seen[abs] || seen[dev] {
			continue
		}
		v := &volume{subject: "volume " + dev, dev: dev}
		if !d.readVolume(v) {
			d.problem(v.subject, "lsblk -f  # check the device name", "not a LUKS2 volume tether can read: %v", v.readErr())
			continue
		}
		out = append(out, v)
	}
	return out
}

// resolve finds a crypttab device on this machine: a path under the
// checked root first, then as it is (UUID= and friends through udev or
// blkid).
func (d *doctor) resolve(spec string) (string, error) {
	if !d.live() && strings.HasPrefix(spec, "/") {
		if _, err := os.Stat(d.path(spec)); err == nil {
			return d.path(spec), nil
		}
	}
	return boot.ResolveDevice(spec)
}

func (v *volume) readErr() error { return v.err }

func (d *doctor) readVolume(v *volume) bool {
	h, err := luks.ReadHeaderFile(v.dev)
	if err != nil {
		v.err = err
		return false
	}
	v.h = h
	v.binds = luks.Bindings(h)
	v.pins = map[string]bool{}
	for _, b := range v.binds {
		if b.JWE != nil {
			for _, l := range leaves(b.JWE) {
				n, _ := l.Header.Pin()
				v.pins[n] = true
			}
		}
	}
	return true
}

// leaves returns the JWEs of the pins a JWE depends on: itself, or for
// sss its children's leaves.
func leaves(j *jose.JWE) []*jose.JWE {
	name, err := j.Header.Pin()
	if err != nil || name != "sss" {
		return []*jose.JWE{j}
	}
	var ch struct {
		SSS struct {
			JWE []string `json:"jwe"`
		} `json:"sss"`
	}
	if json.Unmarshal(j.Header.Clevis, &ch) != nil {
		return []*jose.JWE{j}
	}
	var out []*jose.JWE
	for _, c := range ch.SSS.JWE {
		if cj, err := jose.ParseCompact(c); err == nil {
			out = append(out, leaves(cj)...)
		}
	}
	return out
}

// networkPins fetch their key material over the network.
var networkPins = map[string]bool{"tang": true, "https": true, "smb": true, "managed": true}

func (v *volume) needsNetwork() bool {
	for p := range v.pins {
		if networkPins[p] {
			return true
		}
	}
	return false
}

// rootMapperName is the crypttab name of the volume / is on, from fstab.
func (d *doctor) rootMapperName() string {
	data, err := os.ReadFile(d.path("/etc/fstab"))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && !strings.HasPrefix(f[0], "#") && f[1] == "/" {
			if n, ok := strings.CutPrefix(f[0], "/dev/mapper/"); ok {
				return n
			}
		}
	}
	return ""
}

// unitDirs are where unit files are looked up, most specific first.
var unitDirs = []string{"/etc/systemd/system", "/run/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system"}

// unitFile returns the path of a unit's file on the checked system.
func (d *doctor) unitFile(name string) string {
	for _, dir := range unitDirs {
		p := d.path(filepath.Join(dir, name))
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// enabled reports whether a unit is wanted by one of targets (a
// .wants/ link in /etc or in the distribution's unit directories).
func (d *doctor) enabled(unit string, targets ...string) bool {
	for _, dir := range unitDirs {
		for _, t := range targets {
			// The link points into the checked system: it need not
			// resolve from here.
			if _, err := os.Lstat(d.path(filepath.Join(dir, t+".wants", unit))); err == nil {
				return true
			}
		}
	}
	return false
}

// keydSockets returns the paths tether-keyd.socket listens on.
func (d *doctor) keydSockets() map[string]bool {
	out := map[string]bool{}
	files := []string{d.unitFile("tether-keyd.socket")}
	for _, dir := range unitDirs {
		m, _ := filepath.Glob(d.path(filepath.Join(dir, "tether-keyd.socket.d", "*.conf")))
		files = append(files, m...)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if p, ok := strings.CutPrefix(strings.TrimSpace(line), "ListenStream="); ok {
				out[strings.TrimSpace(p)] = true
			}
		}
	}
	// The default, also before the units are installed: a line that
	// names it is a line for tether.
	out["/run/tether/keyd.sock"] = true
	return out
}

// checkUnits checks the systemd side for volumes systemd opens after the
// initramfs, and each such volume's crypttab line.
func (d *doctor) checkUnits(vols []*volume) {
	install := "tether install systemd" + d.installFlags()
	if d.live() {
		install += " && systemctl daemon-reload"
	}
	sockets := d.keydSockets()
	var late []*volume
	for _, v := range vols {
		if v.entry != nil && !v.root {
			late = append(late, v)
		}
	}
	if len(late) == 0 {
		return
	}
	needKeyd, needAskpass, needRemote := false, false, false
	for _, v := range late {
		e := v.entry
		tab := d.path("/etc/crypttab")
		key := e.KeyFile
		perVolume := "/run/cryptsetup-keys.d/" + e.Name + ".key"
		fixLine := fmt.Sprintf("tether crypttab -d %s -n %s --write %s", shellQuote(v.dev), e.Name, shellQuote(tab))
		mode := "socket"
		switch {
		case sockets[key]:
			needKeyd = true
			if key != "/run/tether/keyd.sock" {
				fixLine += " --socket " + key
			}
		case (key == "none" || key == "-" || key == "") && sockets[perVolume]:
			needKeyd, mode = true, "per-volume"
			fixLine += " --askpass"
		case key == "none" || key == "-" || key == "":
			needAskpass, mode = true, "askpass"
			fixLine += " --askpass"
		default:
			d.ok(v.subject, "key file %s is not tether's: left alone", key)
			continue
		}
		if len(v.binds) == 0 {
			d.problem(v.subject, fmt.Sprintf("tether setup -d %s  # or: tether luks bind -d %[1]s PIN CONFIG", shellQuote(v.dev)),
				"its crypttab line asks tether for the key, but %s has no tether or clevis bindings", v.dev)
		}
		if _, ok := e.Option("luks"); !ok {
			for t := range map[string]bool{"plain": true, "tcrypt": true, "bitlk": true} {
				if _, bad := e.Option(t); bad {
					d.problem(v.subject, fixLine, "its crypttab line says %s, but %s is LUKS2: systemd-cryptsetup would set it up as %s", t, v.dev, t)
				}
			}
		}
		if mode == "socket" {
			if _, bad := e.Option("keyfile-offset"); bad {
				d.problem(v.subject, fixLine, "keyfile-offset= makes systemd-cryptsetup seek in the key file, which fails on tether's socket %s: the volume never gets its key", key)
			}
			if _, bad := e.Option("keyfile-erase"); bad {
				d.problem(v.subject, fixLine, "keyfile-erase makes systemd-cryptsetup delete the key file after use: it would remove tether's socket %s for every other volume", key)
			}
		}
		if v.needsNetwork() {
			needRemote = true
			if _, ok := e.Option("_netdev"); !ok {
				d.problem(v.subject, fixLine, "its bindings need the network but its crypttab line lacks _netdev: it is set up before the network is, and its key server cannot answer")
			}
			if _, ok := e.Option("nofail"); !ok {
				d.problem(v.subject, fixLine, "its bindings need the network but its crypttab line lacks nofail: when the key server is down the boot waits at the passphrase prompt, forever on a machine without a keyboard")
			}
		}
		d.ok(v.subject, "crypttab line (%s mode) checked", mode)
	}
	if needKeyd {
		d.checkUnit("tether-keyd.socket", "tether-keyd.service", install, []string{"cryptsetup.target", "remote-cryptsetup.target", "sockets.target"})
		if d.unitFile("systemd-cryptsetup@.service.d/tether.conf") == "" {
			d.problem("units", install, "the drop-in systemd-cryptsetup@.service.d/tether.conf is missing: a volume may ask for its key before tether's socket exists, and fall back to the prompt")
		}
	}
	if needAskpass {
		d.checkUnit("tether-askpass.path", "tether-askpass.service", install, []string{"cryptsetup.target", "remote-cryptsetup.target", "sysinit.target", "paths.target"})
	}
	if needRemote && d.unitFile("remote-cryptsetup.target") != "" && !d.enabled("remote-cryptsetup.target", "multi-user.target", "graphical.target") {
		d.problem("units", d.systemctl("enable remote-cryptsetup.target"),
			"remote-cryptsetup.target is not enabled: no _netdev volume is set up at boot")
	}
}

// checkUnit checks that a tether unit is installed, enabled and runs a
// tether binary that is there.
func (d *doctor) checkUnit(unit, service, install string, targets []string) {
	if d.unitFile(unit) == "" {
		d.problem("units", install, "%s is not installed: nothing gives crypttab volumes their keys", unit)
		return
	}
	if !d.enabled(unit, targets...) {
		d.problem("units", d.systemctl("enable "+unit), "%s is installed but not enabled: it does not start at boot", unit)
	} else {
		d.ok("units", "%s is enabled", unit)
	}
	svc := d.unitFile(service)
	if svc == "" {
		d.problem("units", install, "%s is missing: %s has nothing to start", service, unit)
		return
	}
	data, _ := os.ReadFile(svc)
	for _, line := range strings.Split(string(data), "\n") {
		cmd, ok := strings.CutPrefix(strings.TrimSpace(line), "ExecStart=")
		if !ok {
			continue
		}
		f := strings.Fields(strings.TrimLeft(cmd, "-@:+!"))
		if len(f) == 0 {
			continue
		}
		if fi, err := os.Stat(d.path(f[0])); err != nil || fi.Mode()&0o111 == 0 {
			d.problem("units", install+"  # writes the path of the tether the units run", "%s runs %s, which is not there or not executable", filepath.Base(svc), f[0])
		}
	}
}

// checkBindings checks a volume's header and each of its bindings now.
func (d *doctor) checkBindings(ctx context.Context, v *volume) {
	dev := shellQuote(v.dev)
	if luks.EncryptUnfinished(v.h) {
		d.problem(v.subject, "tether luks encrypt -d "+dev+" PIN CONFIG  # the same command as before: it finishes the job", "an in-place encryption is unfinished")
	}
	if lo := luks.Leftovers(v.h); len(lo) > 0 {
		d.problem(v.subject, "tether luks repair -d "+dev, "an interrupted binding change is left in the header: %s", lo[0].What)
	}
	pinOnly := 0 // bindings that nothing opens at boot without a PIN
	for _, b := range v.binds {
		subject := fmt.Sprintf("%s keyslot %d", v.subject, b.Slot)
		if b.Err != nil {
			d.problem(subject, fmt.Sprintf("tether luks unbind -d %s -s %d  # then bind it again: tether luks bind -d %[1]s PIN CONFIG", dev, b.Slot),
				"its token cannot be read: %v", b.Err)
			continue
		}
		if bad := d.unknownPins(b.JWE); bad != "" {
			d.problem(subject, fmt.Sprintf("tether luks unbind -d %s -s %d  # then bind it again with a pin this tether knows", dev, b.Slot),
				"its binding uses the pin %q, which this tether does not know (known: %s)", bad, strings.Join(pin.Names(), ", "))
			continue
		}
		before := len(d.problems)
		managed := false
		for _, l := range leaves(b.JWE) {
			switch n, _ := l.Header.Pin(); n {
			case "tang":
				d.checkTang(ctx, subject, v, b, l)
			case "tpm2":
				d.checkTPM(ctx, subject, v, b, l)
			case "managed":
				managed = true
				d.checkManaged(ctx, subject, l)
			}
		}
		if len(d.problems) > before || managed {
			continue
		}
		if needsPIN(b.JWE) {
			// Decrypting it would need the PIN, which doctor does not
			// ask for; the TPM's check above is all there is to see.
			pinOnly++
			when := "not at boot"
			if v.keyd {
				when = "keyd asks for it at boot"
			}
			d.ok(subject, "%s needs its PIN: %s", pin.Describe(b.JWE), when)
			continue
		}
		// What the checks above cannot see (an SMB password, an https
		// endpoint, a token whose passphrase does not open its slot): the
		// binding must open its keyslot, now.
		tctx, cancel := context.WithTimeout(ctx, d.o.Timeout+time.Second)
		pass, err := pin.Decrypt(tctx, b.JWE, pin.Options{Timeout: d.o.Timeout, Warn: io.Discard})
		cancel()
		if err == nil {
			err = d.runner.TestKey(ctx, v.dev, b.Slot, pass)
			clear(pass)
			if err != nil {
				err = fmt.Errorf("it decrypts, but not to the passphrase of keyslot %d: %w", b.Slot, err)
			}
		}
		if err != nil {
			d.problem(subject, fmt.Sprintf("tether luks unlock -d %s --test  # says why; make the key source answer, or rebind: tether luks regen -d %[1]s -s %d -k - PIN CONFIG", dev, b.Slot),
				"%s does not unlock now: %s", pin.Describe(b.JWE), oneLine(err))
			continue
		}
		d.ok(subject, "%s unlocks now", pin.Describe(b.JWE))
	}
	if pinOnly > 0 && pinOnly == len(v.binds) && v.keyd {
		d.ok(v.subject, "every binding needs a TPM PIN: at boot keyd asks for it through systemd's password agents (the console, plymouth, systemd-tty-ask-password-agent --query) and waits for it until its --deadline; the volume does not open unattended")
	} else if pinOnly > 0 && pinOnly == len(v.binds) {
		unlock := "tether luks unlock -d " + dev
		if v.entry != nil {
			unlock += " -n " + shellQuote(v.entry.Name)
		}
		then := "systemd-cryptsetup asks for its passphrase instead; after boot, " + unlock + " asks the PIN on a terminal"
		if v.entry != nil {
			then += "; with keyd instead of the askpass agent the PIN is asked at boot: tether crypttab -d " + dev + " -n " + shellQuote(v.entry.Name) + " --write " + shellQuote(d.path("/etc/crypttab"))
		}
		if v.root {
			then = "the initramfs asks for its passphrase instead"
		}
		d.problem(v.subject, "tether luks bind -d "+dev+" -k - PIN CONFIG  # a binding that needs no PIN beside it (a network pin, or sss of tpm2 and tang); the recovery passphrase on stdin",
			"every binding needs a TPM PIN (tpm2 \"with_pin\"), and nothing at this boot step asks for one: the volume does not unlock by itself (%s)", then)
	}
}

// needsPIN reports whether j cannot be decrypted without a PIN: a tpm2
// JWE sealed "with_pin", or an sss whose threshold the parts that need
// no PIN cannot meet. At boot only keyd asks for a PIN; the askpass
// agent and the initramfs do not.
func needsPIN(j *jose.JWE) bool {
	switch name, _ := j.Header.Pin(); name {
	case "tpm2":
		return tpm2.NeedsPIN(j)
	case "sss":
		var h struct {
			SSS struct {
				T   int      `json:"t"`
				JWE []string `json:"jwe"`
			} `json:"sss"`
		}
		if json.Unmarshal(j.Header.Clevis, &h) != nil {
			return false
		}
		free := 0
		for _, c := range h.SSS.JWE {
			if cj, err := jose.ParseCompact(c); err == nil && !needsPIN(cj) {
				free++
			}
		}
		return free < h.SSS.T
	}
	return false
}

func (d *doctor) unknownPins(j *jose.JWE) string {
	known := map[string]bool{}
	for _, n := range pin.Names() {
		known[n] = true
	}
	var check func(j *jose.JWE) string
	check = func(j *jose.JWE) string {
		n, err := j.Header.Pin()
		if err != nil {
			return "?"
		}
		if !known[n] {
			return n
		}
		if n == "sss" {
			for _, c := range leaves(j) {
				if bad := check(c); bad != "" {
					return bad
				}
			}
		}
		return ""
	}
	return check(j)
}

// checkTang checks one tang leaf: the server answers, still advertises
// the exchange key the binding used, and still holds a signing key the
// binding trusted.
func (d *doctor) checkTang(ctx context.Context, subject string, v *volume, b luks.Binding, l *jose.JWE) {
	var ch struct {
		Tang struct {
			URL string          `json:"url"`
			Adv json.RawMessage `json:"adv"`
		} `json:"tang"`
	}
	if json.Unmarshal(l.Header.Clevis, &ch) != nil || ch.Tang.URL == "" {
		d.problem(subject, fmt.Sprintf("tether luks unbind -d %s -s %d  # then bind it again", shellQuote(v.dev), b.Slot), "its tang binding has no server URL")
		return
	}
	url := ch.Tang.URL
	r, seen := d.advs[url]
	if !seen {
		tctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
		data, err := (&tangproto.Client{}).Advertisement(tctx, url, "")
		cancel()
		if err == nil {
			r.ks, r.ver, err = tangproto.VerifyAdvertisement(data)
		}
		r.err = err
		d.advs[url] = r
	}
	if r.err != nil {
		d.problem(subject, "tether adv "+url+"  # answers once the server runs (systemctl start tangd.socket, or tether-server) and the network reaches it",
			"tang server %s does not answer now: %s", url, oneLine(r.err))
		return
	}
	current := false
	for _, k := range r.ks.WithOp("deriveKey") {
		current = current || k.MatchesThumbprint(l.Header.Kid)
	}
	pinned := []*jose.JWK{}
	if ks, err := jose.ParseKeySet(ch.Tang.Adv); err == nil {
		pinned = ks.WithOp("verify")
	}
	trusted := false
	for _, p := range pinned {
		for _, k := range r.ver {
			tp, _ := p.Thumbprint("S256")
			trusted = trusted || k.MatchesThumbprint(tp)
		}
	}
	if current && trusted {
		d.ok(subject, "tang server %s answers and advertises the binding's keys", url)
		return
	}
	// Rotated: the old keys still work while the server keeps them
	// (hidden); regen rebinds through the old signing key. If the server
	// no longer signs with it, the old keys are gone: only a passphrase
	// rebinds.
	old := false
	for _, p := range pinned {
		tp, _ := p.Thumbprint("S256")
		tctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
		_, err := (&tangproto.Client{}).Advertisement(tctx, url, tp)
		cancel()
		old = old || err == nil
	}
	if old {
		d.problem(subject, fmt.Sprintf("tether luks regen -d %s -s %d", shellQuote(v.dev), b.Slot),
			"tang server %s rotated its keys: it no longer advertises the keys this binding was made with (it still unlocks while the server keeps the old ones)", url)
		return
	}
	d.problem(subject, fmt.Sprintf("tether luks regen -d %s -s %d -k -  # with a passphrase of the volume (the recovery passphrase) on stdin", shellQuote(v.dev), b.Slot),
		"tang server %s no longer has the keys this binding was made with: it cannot unlock through this server", url)
}

// checkManaged checks that a managed binding's server accepts
// connections. It asks nothing more: an unlock request is an event on the
// server (audited, maybe waiting for approval).
func (d *doctor) checkManaged(ctx context.Context, subject string, l *jose.JWE) {
	var ch struct {
		Managed struct {
			URL string `json:"url"`
		} `json:"managed"`
	}
	json.Unmarshal(l.Header.Clevis, &ch)
	u, err := url.Parse(ch.Managed.URL)
	if err != nil || u.Host == "" {
		d.problem(subject, "tether luks list  # shows the binding; bind it again", "its managed binding has no server URL")
		return
	}
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	c, err := (&net.Dialer{Timeout: d.o.Timeout}).DialContext(ctx, "tcp", host)
	if err != nil {
		d.problem(subject, "curl -sk "+shellQuote(u.String())+"/healthz  # answers once the server runs and the network reaches it",
			"managed server %s does not answer now: %s", u, oneLine(err))
		return
	}
	c.Close()
	d.ok(subject, "managed server %s accepts connections (not asked to unlock: that is an event on the server)", u)
}

// healCommand is the fix for tpm2 parts whose PCRs changed: tether tpm
// heal, which reseals them once a network pin of the volume proves the
// secret, or, with none, a passphrase of the volume.
func healCommand(v *volume) string {
	cmd := "tether tpm heal -d " + shellQuote(v.dev)
	for _, p := range []string{"tang", "managed", "https", "smb"} {
		if v.pins[p] {
			return cmd + "  # once the boot chain is in the state it should keep; a network pin of the volume (" + p + ") must answer"
		}
	}
	return cmd + " --allow-passphrase -k -  # once the boot chain is in the state it should keep, with a passphrase of the volume (the recovery passphrase) on stdin"
}

// checkTPM checks one tpm2 leaf against this machine's TPM.
func (d *doctor) checkTPM(ctx context.Context, subject string, v *volume, b luks.Binding, l *jose.JWE) {
	tctx, cancel := context.WithTimeout(ctx, d.o.Timeout)
	defer cancel()
	err := tpm2.Pin{TCTI: d.o.TCTI}.Check(tctx, l)
	regen := fmt.Sprintf("tether luks regen -d %s -s %d", shellQuote(v.dev), b.Slot)
	note := ""
	if name, _ := b.JWE.Header.Pin(); name == "tpm2" {
		// Nothing else decrypts this binding: regen needs a passphrase.
		regen += " -k -"
		note = " with a passphrase of the volume (the recovery passphrase) on stdin"
	}
	var pm *tpm.PCRMismatchError
	switch {
	case err == nil:
		d.ok(subject, "%s: the TPM can unseal it now", pin.Describe(l))
	case errors.As(err, &pm):
		d.problem(subject, healCommand(v),
			"%s: %s PCR %s no longer hold the values it was sealed to (firmware, boot loader or kernel changed): the TPM will not unseal it "+
				"(tether tpm explain -d %s shows which boot events made them)", pin.Describe(l), pm.Bank, tpm.FormatPCRs(pm.PCRs), shellQuote(v.dev))
	case errors.Is(err, tpm.ErrNoTPM):
		d.problem(subject, "tether setup -d "+shellQuote(v.dev)+"  # bind it to a key source this machine has", "%s, but there is no TPM here: %s", pin.Describe(l), oneLine(err))
	case errors.Is(err, tpm.ErrWrongTPM):
		d.problem(subject, strings.TrimSuffix(regen+"  #"+note, "  #"), "%s was sealed by another TPM (or this TPM was cleared since)", pin.Describe(l))
	default:
		d.problem(subject, "tpm2_pcrread  # check the TPM, then run tether doctor again", "%s: cannot check it with the TPM: %s", pin.Describe(l), oneLine(err))
	}
}

// checkInitramfs checks, for volumes the initramfs opens, that the boot
// integration is installed and that every initramfs image holds tether
// and what the bindings need.
func (d *doctor) checkInitramfs(vols []*volume) {
	var early []*volume
	for _, v := range vols {
		if v.root {
			early = append(early, v)
		}
	}
	if len(early) == 0 {
		return
	}
	for _, v := range early {
		if v.entry.KeyFile != "none" && v.entry.KeyFile != "-" {
			d.problem(v.subject, fmt.Sprintf("tether crypttab -d %s -n %s --root --write %s", shellQuote(v.dev), v.entry.Name, shellQuote(d.path("/etc/crypttab"))),
				"the initramfs opens it, but its key file is %s: there is no such file in the initramfs (tether opens it before cryptroot asks)", v.entry.KeyFile)
		}
	}
	tools := exists(d.path("/etc/initramfs-tools")) || exists(d.path("/usr/share/initramfs-tools")) || exists(d.path("/usr/sbin/update-initramfs"))
	dracut := exists(d.path("/usr/lib/dracut")) || exists(d.path("/usr/bin/dracut"))
	var gen, rebuild, install string
	switch {
	case tools:
		gen, rebuild, install = "initramfs-tools", "update-initramfs -u -k", "tether install initramfs-tools"+d.installFlags()
		if !exists(d.path("/etc/initramfs-tools/hooks/tether")) && !exists(d.path("/usr/share/initramfs-tools/hooks/tether")) {
			d.problem("initramfs", install+" && "+d.inRoot("update-initramfs -u -k all"),
				"the root volume is bound but tether's initramfs-tools hook is not installed: the initramfs cannot unlock it")
			return
		}
	case dracut:
		gen, rebuild, install = "dracut", "dracut -f --kver", "tether install dracut"+d.installFlags()
		if !exists(d.path("/usr/lib/dracut/modules.d/60tether/module-setup.sh")) {
			d.problem("initramfs", install+" && "+d.inRoot("dracut -f --regenerate-all"),
				"the root volume is bound but tether's dracut module is not installed: the initramfs cannot unlock it")
			return
		}
	default:
		d.problem("initramfs", "apt install initramfs-tools && tether install initramfs-tools"+d.installFlags(),
			"the root volume is bound but neither initramfs-tools nor dracut is installed")
		return
	}
	images := d.images()
	if len(images) == 0 {
		d.problem("initramfs", d.inRoot(strings.Replace(rebuild, " -k", " -k all", 1)), "no initramfs image in %s", d.path("/boot"))
		return
	}
	pins := map[string]bool{}
	for _, v := range early {
		for p := range v.pins {
			pins[p] = true
		}
	}
	for _, img := range images {
		subject := "initramfs " + img.path
		fix := d.inRoot(rebuild + " " + img.kver)
		names, err := listInitramfs(img.path, gen)
		if err != nil {
			d.problem(subject, fix, "cannot list its contents: %v", err)
			continue
		}
		has := func(suffixes ...string) bool {
			for _, n := range names {
				for _, s := range suffixes {
					if n == s || strings.HasSuffix(n, "/"+s) {
						return true
					}
				}
			}
			return false
		}
		missing := func(what, why string, fix string) {
			d.problem(subject, fix, "%s is not in it: %s", what, why)
		}
		before := len(d.problems)
		if !has("sbin/tether", "bin/tether") && !has(d.dracutBin()) {
			missing("tether", "the root volume waits for its passphrase at the prompt", fix)
		}
		if !has("sbin/cryptsetup", "bin/cryptsetup") {
			missing("cryptsetup", "no volume can be opened", fix)
		}
		if gen == "initramfs-tools" && !has("scripts/local-top/tether") {
			missing("scripts/local-top/tether", "nothing runs tether before cryptroot asks for the passphrase", fix)
		}
		if pins["smb"] && !has("sbin/tether-smb", "bin/tether-smb") {
			missing("tether-smb", "the root volume's smb binding needs it", fix+"  # after installing tether-smb next to tether (the tether package ships it)")
		}
		if pins["https"] && !has("etc/ssl/certs/ca-certificates.crt", "etc/pki/tls/certs/ca-bundle.crt", "etc/ssl/ca-bundle.pem", "etc/pki/tls/cacert.pem", "etc/ssl/cert.pem") {
			missing("a CA bundle", "the root volume's https binding cannot check its server's certificate", "apt install ca-certificates && "+fix)
		}
		if pins["tang"] || pins["https"] || pins["smb"] || pins["managed"] {
			if gen == "initramfs-tools" && !has("bin/ipconfig") {
				missing("ipconfig", "the root volume's bindings need the network, and nothing brings it up", fix)
			}
			for _, m := range d.netDrivers() {
				if !hasModule(names, m) && !d.builtin(img.kver, m) {
					missing("the network card's driver "+m, "the root volume's bindings need the network, and the card has no driver there (MODULES=dep leaves it out; tether's hook adds it)", fix)
				}
			}
		}
		if pins["managed"] && exists(d.path("/etc/tether/device/device.json")) && !has("etc/tether/device/device.json") {
			missing("the managed device identity (/etc/tether/device)", "the root volume's managed binding cannot identify this machine", fix)
		}
		if pins["tpm2"] && !d.tpmDriver(names, img.kver) {
			missing("a TPM driver", "the root volume's tpm2 binding cannot reach the TPM", "printf 'tpm_crb\\ntpm_tis\\n' >> "+shellQuote(d.path("/etc/initramfs-tools/modules"))+" && "+fix)
		}
		if len(d.problems) == before {
			d.ok(subject, "holds tether and what the root volume's bindings need")
		}
	}
}

// dracutBin is where the dracut module put tether: the path its
// module-setup.sh names.
func (d *doctor) dracutBin() string {
	data, err := os.ReadFile(d.path("/usr/lib/dracut/modules.d/60tether/module-setup.sh"))
	if err != nil {
		return "\x00"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "inst_multiple" && strings.HasPrefix(f[1], "/") {
			return strings.TrimPrefix(f[1], "/")
		}
	}
	return "\x00"
}

// tpmDriver reports whether the initramfs can reach a TPM: a driver
// module in it, or one built into the kernel.
func (d *doctor) tpmDriver(names []string, kver string) bool {
	for _, n := range names {
		if strings.Contains(n, "drivers/char/tpm/") {
			return true
		}
	}
	for _, dir := range []string{"/lib/modules", "/usr/lib/modules"} {
		data, err := os.ReadFile(d.path(filepath.Join(dir, kver, "modules.builtin")))
		if err == nil && (strings.Contains(string(data), "tpm_crb.ko") || strings.Contains(string(data), "tpm_tis.ko")) {
			return true
		}
	}
	return false
}

// netDrivers are the kernel modules that drive this machine's network
// cards (only on the running system: a tree under --root has no cards).
func (d *doctor) netDrivers() []string {
	if !d.live() {
		return nil
	}
	links, _ := filepath.Glob("/sys/class/net/*/device/driver/module")
	var out []string
	for _, l := range links {
		if t, err := filepath.EvalSymlinks(l); err == nil && !slices.Contains(out, filepath.Base(t)) {
			out = append(out, filepath.Base(t))
		}
	}
	return out
}

// moduleName is a module file's name as the kernel names the module:
// without the extension, '-' read as '_'.
func moduleName(path string) string {
	b := filepath.Base(path)
	b, _, _ = strings.Cut(b, ".ko")
	return strings.ReplaceAll(b, "-", "_")
}

// hasModule reports whether an initramfs listing holds module m.
func hasModule(names []string, m string) bool {
	for _, n := range names {
		if strings.Contains(n, ".ko") && moduleName(n) == m {
			return true
		}
	}
	return false
}

// builtin reports whether module m is built into kernel kver.
func (d *doctor) builtin(kver, m string) bool {
	for _, dir := range []string{"/lib/modules", "/usr/lib/modules"} {
		data, err := os.ReadFile(d.path(filepath.Join(dir, kver, "modules.builtin")))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if line != "" && moduleName(line) == m {
				return true
			}
		}
	}
	return false
}

type image struct{ path, kver string }

// images lists the initramfs images in /boot with their kernel versions.
func (d *doctor) images() []image {
	var out []image
	for _, pat := range []string{"initrd.img-*", "initramfs-*.img"} {
		m, _ := filepath.Glob(d.path(filepath.Join("/boot", pat)))
		for _, p := range m {
			b := filepath.Base(p)
			if strings.HasSuffix(b, ".bak") || strings.HasSuffix(b, ".old-dkms") || strings.Contains(b, "kdump") || strings.Contains(b, "rescue") {
				continue
			}
			kver := strings.TrimPrefix(b, "initrd.img-")
			kver = strings.TrimSuffix(strings.TrimPrefix(kver, "initramfs-"), ".img")
			out = append(out, image{p, kver})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].path < out[j].path })
	return out
}

func exists(p string) bool { _, err := os.Lstat(p); return err == nil }

// oneLine keeps a multi-line error on the problem's line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}

// shellQuote quotes s for a POSIX shell when it needs it, so that the fix
// can be pasted as it is.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-=:,+@%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

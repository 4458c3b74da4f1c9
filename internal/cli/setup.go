package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
	smbpin "github.com/tether-nbde/tether/pin/smb"
)

// keySource is one place the key lives, as setup asks for it.
type keySource struct {
	pin  string         // tang, smb, https, tpm2
	cfg  map[string]any // the pin's configuration
	desc string         // for the person
	// secret is set when the configuration names a password or token
	// file: it must be protected by another pin or stored in the clear.
	secret bool
}

const setupUsage = `Usage: tether setup
       tether setup (-d DEV | --create FILE --size SIZE) KEY-SOURCE [KEY-SOURCE] [OPTIONS]

A guided first run: make a disk or container file unlock by itself at
boot, from a key that lives somewhere else. Run without options at a
terminal, it asks in plain words, one step at a time:

  1. which disk, partition or container file (or a new container file of
     a size you choose)
  2. where the key lives: a tether or Tang server (those found on the
     local network are offered as choices), a key file on an SMB
     share (a NAS such as a FRITZ!Box), an HTTPS endpoint, this
     computer's TPM, or two of them together (both needed, or either one)
  3. it shows each server's identity (the thumbprint of its signing key,
     the fingerprint of an HTTPS server's key) for you to confirm, and
     tries each source before anything is written
  4. after a confirmation that names the device, it binds (tether luks
     bind, create or encrypt), installs the systemd units (tether install
     systemd), writes the crypttab line (tether crypttab --write) and an
     fstab line if you want it mounted, keeping every other line, tests
     an unlock, and prints a summary: what unlocks the disk, what happens
     when the key source is gone, where the recovery passphrase is

Nothing is changed before the last confirmation, and a wrong answer (a
mounted device, a server that does not answer, a wrong share password)
is explained and asked again. A mounted device is refused. Run it again
to add a key source to a volume that already has one (the new binding is
added, the others stay), or to replace one.

The root volume: given the LUKS2 volume the running system is on, setup
binds it like any other (its passphrases keep working), then installs
tether's initramfs-tools or dracut integration (whichever builds this
system's initramfs) instead of the units, marks the root's crypttab line
for the initramfs (keeping its options), rebuilds the initramfs
(update-initramfs -u -k all, or dracut -f --regenerate-all) and checks
that the new images hold tether and what the binding needs. A root that
is not encrypted yet is refused: encrypt it at the next boot with tether
install initramfs-tools --first-boot (docs/BOOT.md).

Key sources (the flag form, for scripts and factories):
  --server URL           a tether or Tang server; with --thp THP (its
                         signing key's thumbprint: tether adv URL; one
                         per --server, in order) or --trust-server
                         (accept the key it shows)
  --smb //HOST[:PORT]/SHARE/PATH
                         a key file on an SMB share, read as --smb-user
                         (default guest) with the password in
                         --smb-password-file FILE; --smb-create makes
                         the key file first (64 random bytes; an
                         existing file is never replaced)
  --https URL            an endpoint that answers with the key material;
                         --https-pin SHA256 (base64 SHA-256 of its public
                         key) or --trust-https (accept the key it shows)
  --tpm                  this computer's TPM; --pcr IDS binds to the boot
                         state (default 7, Secure Boot; "none" for none)
  --need all|any         with two sources: all of them must answer
                         (default), or any one. With all, a share
                         password or HTTPS token is encrypted by the other
                         source; with any it would be stored in the clear
                         on the disk, which needs --allow-plain-credentials

Options:
  -d DEV                 an existing LUKS2 volume (a key is added) or an
                         unencrypted filesystem (encrypted in place: needs
                         --confirm DEV)
  --create FILE          a new container file (must not exist), with an
                         ext4 filesystem inside; --size SIZE (e.g. 2G)
  -k KEYFILE|-           an existing passphrase of a LUKS2 volume (-:
                         stdin)
  -n NAME                the volume's name, /dev/mapper/NAME (default:
                         from the file or device name)
  --mount DIR            also write an fstab line mounting it on DIR
                         (_netdev,nofail: the boot does not wait for it)
  --recovery-file PATH   where the new recovery passphrase goes (mode
                         0600; default: printed on stdout, once)
  --replace SLOT         replace the binding of keyslot SLOT (tether luks
                         list shows them) instead of adding one; the new
                         one is verified before the old one is removed
  --confirm DEV          confirm encrypting DEV in place
  --root DIR             write crypttab, fstab and the units into the
                         system under DIR instead of /
  --bin PATH             the tether the units run (default: this one;
                         with --root, its path inside DIR)
  --timeout D            bound for each network exchange (default 10s)
  --discover=false       at a terminal, ask for a server's address
                         without first looking for servers on the local
                         network (multicast DNS, as tether discover does)

Exit status: 0 the volume is bound and unlocks; 1 something failed
(nothing was changed unless the message says otherwise); 2 wrong use.

Examples:
  $ sudo tether setup
  $ sudo tether setup --create /srv/vault.img --size 2G -n vault --mount /srv/vault \
      --server http://keys.lan:7500 --thp 9C8hYw... --recovery-file /media/usb/vault.key
  $ sudo tether setup -d /dev/sdb1 -k - --tpm --server http://keys.lan:7500 --trust-server --need any
`

// setupFlags are the flags of "tether setup": the disk, the key sources
// and how they combine.
type setupFlags struct {
	dev         *string
	create      *string
	size        *string
	keyFile     *string
	name        *string
	mount       *string
	recovery    *string
	confirm     *string
	root        *string
	bin         *string
	timeout     *time.Duration
	trustServer *bool
	smbURL      *string
	smbUser     *string
	smbPass     *string
	smbCreate   *bool
	httpsURL    *string
	httpsPin    *string
	trustHTTPS  *bool
	useTPM      *bool
	pcr         *string
	need        *string
	plain       *bool
	replace     *int
	discover    *bool
	servers     listFlag
	thps        listFlag
}

// setupPlan is everything setup asked; nothing is changed until run.
type setupPlan struct {
	root     string
	bin      string // the tether the units run ("": this one)
	dev      string // device or file
	create   bool
	size     int64
	luks     bool   // dev is LUKS2 already
	rootVol  bool   // dev holds the running root: the initramfs opens it
	gen      string // with rootVol: initramfs-tools or dracut
	bound    int    // bindings it has
	replace  int    // the keyslot whose binding the new one replaces, or -1
	name     string
	mount    string
	key      []byte
	recovery string // file for the recovery passphrase, or "" for stdout
	sources  []keySource
	need     string // all or any
	plain    bool   // credentials may be stored in the clear
	timeout  time.Duration
	closers  []io.Closer // memory files of passwords, closed at the end
	// noDiscover: the interactive form asks for a server's address
	// without looking on the network first (setup_discover.go).
	noDiscover bool
}

func declareSetupFlags(fs *flag.FlagSet) *setupFlags {
	f := &setupFlags{
		dev:         fs.String("d", "", ""),
		create:      fs.String("create", "", ""),
		size:        fs.String("size", "", ""),
		keyFile:     fs.String("k", "", ""),
		name:        fs.String("n", "", ""),
		mount:       fs.String("mount", "", ""),
		recovery:    fs.String("recovery-file", "", ""),
		confirm:     fs.String("confirm", "", ""),
		root:        fs.String("root", "/", ""),
		bin:         fs.String("bin", "", ""),
		timeout:     fs.Duration("timeout", pin.DefaultTimeout, ""),
		trustServer: fs.Bool("trust-server", false, ""),
		smbURL:      fs.String("smb", "", ""),
		smbUser:     fs.String("smb-user", "", ""),
		smbPass:     fs.String("smb-password-file", "", ""),
		smbCreate:   fs.Bool("smb-create", false, ""),
		httpsURL:    fs.String("https", "", ""),
		httpsPin:    fs.String("https-pin", "", ""),
		trustHTTPS:  fs.Bool("trust-https", false, ""),
		useTPM:      fs.Bool("tpm", false, ""),
		pcr:         fs.String("pcr", "7", ""),
		need:        fs.String("need", "all", ""),
		plain:       fs.Bool("allow-plain-credentials", false, ""),
		replace:     fs.Int("replace", -1, ""),
		discover:    fs.Bool("discover", true, ""),
	}
	fs.Var(&f.servers, "server", "")
	fs.Var(&f.thps, "thp", "")
	return f
}

func setupCmd() *command.Command {
	return &command.Command{
		Name:    "setup",
		Summary: "guided first run: make a disk unlock at boot from a server, a share, HTTPS or the TPM",
		Usage:   setupUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			f := declareSetupFlags(fs)
			return func(env *Env, args []string) error { return runSetup(env, f, args) }
		},
	}
}

// runSetup is "tether setup": guided when no disk is given, else from
// the flags.
func runSetup(env *Env, f *setupFlags, args []string) error {
	if len(args) != 0 {
		return command.Usagef("setup takes no arguments (see the flags)")
	}
	p := &setupPlan{replace: *f.replace, root: *f.root, bin: *f.bin, name: *f.name, mount: *f.mount, recovery: *f.recovery, need: *f.need, plain: *f.plain, timeout: *f.timeout}
	p.noDiscover = !*f.discover
	defer func() {
		for _, c := range p.closers {
			c.Close()
		}
	}()
	var err error
	if *f.dev == "" && *f.create == "" {
		if len(f.servers) > 0 || *f.smbURL != "" || *f.httpsURL != "" || *f.useTPM {
			return command.Usagef("which disk? give -d DEV or --create FILE --size SIZE with the key sources (or no flags at all, at a terminal, to be asked)")
		}
		return setupInteractive(env, p)
	}
	ctx := context.Background()
	switch {
	case *f.dev != "" && *f.create != "":
		return command.Usagef("-d and --create exclude each other")
	case *f.create != "":
		if *f.size == "" {
			return command.Usagef("--create needs --size, e.g. --size 2G")
		}
		n, err := parseSize(*f.size)
		if err != nil {
			return command.Usagef("--size %s: %v", *f.size, err)
		}
		p.dev, p.create, p.size = *f.create, true, n
		if err := p.checkNewFile(); err != nil {
			return err
		}
	default:
		p.dev = *f.dev
		if err := p.checkDevice(); err != nil {
			return err
		}
		if *f.replace >= 0 {
			if err := p.checkReplace(); err != nil {
				return err
			}
		}
		if !p.luks && *f.confirm != p.dev {
			return command.WithHint(fmt.Errorf("%s is not encrypted yet: setup would encrypt it in place", p.dev),
				"back it up, make its last 32 MiB free, and confirm with --confirm %s", p.dev)
		}
	}
	if *f.need != "all" && *f.need != "any" {
		return command.Usagef("--need is all or any, not %q", *f.need)
	}
	srcs, err := f.keySources(ctx, env)
	if err != nil {
		return err
	}
	p.sources = srcs
	switch len(p.sources) {
	case 0:
		return command.Usagef("where does the key live? give --server, --smb, --https or --tpm")
	case 1, 2:
	default:
		return command.Usagef("give at most two key sources")
	}
	// Refuse a policy that would store a password in the clear
	// before asking anyone anything.
	if _, _, err := p.policy(); err != nil {
		return err
	}
	for _, s := range p.sources {
		if s.pin == "smb" && *f.smbCreate {
			// The one change before the bind, asked for by name.
			if err := createShareKey(ctx, s, *f.timeout); err != nil {
				return err
			}
			fmt.Fprintf(env.Stderr, "tether: created %s with 64 random bytes\n", s.desc)
		}
		if err := trySource(ctx, s, p.timeout); err != nil {
			return err
		}
	}
	if p.luks {
		if p.key, err = readKey(env, *f.keyFile, p.dev); err != nil {
			return err
		}
		defer clear(p.key)
	}
	return p.run(ctx, env)
}

// keySources checks the key sources the flags name, in the order of
// the policy: the servers, the share, the HTTPS URL, the TPM.
func (f *setupFlags) keySources(ctx context.Context, env *Env) ([]keySource, error) {
	var srcs []keySource
	if len(f.thps) > len(f.servers) {
		return nil, command.Usagef("%d --thp for %d --server: give one thumbprint per server, in the same order", len(f.thps), len(f.servers))
	}
	for i, s := range f.servers {
		thp := ""
		if i < len(f.thps) {
			thp = f.thps[i]
		}
		src, err := serverSource(ctx, s, thp, *f.trustServer, *f.timeout)
		if err != nil {
			return nil, err
		}
		if thp == "" {
			fmt.Fprintf(env.Stderr, "tether: trusting %s as %s (--trust-server)\n", s, src.cfg["thp"])
		}
		srcs = append(srcs, src)
	}
	if *f.smbURL != "" {
		src, err := smbSource(*f.smbURL, *f.smbUser, *f.smbPass)
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, src)
	}
	if *f.httpsURL != "" {
		src, fp, err := httpsSource(ctx, *f.httpsURL, *f.httpsPin, *f.trustHTTPS, *f.timeout)
		if err != nil {
			return nil, err
		}
		if *f.httpsPin == "" {
			fmt.Fprintf(env.Stderr, "tether: trusting %s, whose key is %s (--trust-https)\n", *f.httpsURL, fp)
		}
		srcs = append(srcs, src)
	}
	if *f.useTPM {
		srcs = append(srcs, tpmSource(*f.pcr))
	}
	return srcs, nil
}

// checkNewFile checks a container file to create.
func (p *setupPlan) checkNewFile() error {
	abs, err := filepath.Abs(p.dev)
	if err != nil {
		return err
	}
	p.dev = abs
	if _, err := os.Lstat(abs); err == nil {
		return command.WithHint(fmt.Errorf("%s exists already: setup never overwrites a file", abs),
			"choose a new name, or give the existing container with -d %s", abs)
	}
	if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
		return command.WithHint(fmt.Errorf("directory %s does not exist", filepath.Dir(abs)), "create it first (mkdir -p %s)", filepath.Dir(abs))
	}
	if strings.ContainsAny(abs, " \t\n") {
		return command.WithHint(fmt.Errorf("crypttab cannot name %q: its fields are separated by blanks", abs), "choose a path without blanks")
	}
	if p.size < 64<<20 {
		return fmt.Errorf("%d MiB is too small: a container needs at least 64M", p.size>>20)
	}
	if p.name == "" {
		p.name = volumeName(abs)
	}
	return nil
}

// checkDevice checks an existing device or file: not the running root,
// not mounted, and whether it is LUKS2 already.
func (p *setupPlan) checkDevice() error {
	dev := p.dev
	if !strings.HasPrefix(dev, "/dev/") {
		abs, err := filepath.Abs(dev)
		if err != nil {
			return err
		}
		dev = abs
	}
	fi, err := os.Stat(dev)
	if err != nil {
		return command.WithHint(fmt.Errorf("%s does not exist", dev), "check the name (lsblk -f lists disks and partitions)")
	}
	p.dev = dev
	holds, what := holdsRunningRoot(dev)
	if holds && !openAsLUKS2(dev) {
		// Refused from what the kernel says, without reading the disk.
		return p.checkRootVolume(what)
	}
	if at := mountedWhere(dev, fi); at != "" && !holds {
		return command.WithHint(fmt.Errorf("%s is mounted on %s: setup does not touch a mounted device", dev, at),
			"unmount it first (umount %s), or choose another one", at)
	}
	h, err := luks.ReadHeaderFile(dev)
	switch {
	case err == nil:
		p.luks = true
		p.bound = len(luks.Bindings(h))
	case errors.Is(err, luks.ErrNotLUKS):
		if fi.Mode().IsRegular() && strings.ContainsAny(dev, " \t\n") {
			return fmt.Errorf("crypttab cannot name %q: its fields are separated by blanks", dev)
		}
	default:
		return luksError(err, dev)
	}
	if holds {
		// Only the LUKS2 volume itself: binding adds a keyslot and
		// changes nothing else; the disk it runs from is never encrypted.
		return p.checkRootVolume(what)
	}
	if p.name == "" {
		p.name = volumeName(dev)
		if p.luks {
			// A volume crypttab already names keeps its name: a second
			// line would set the same device up twice.
			if n := p.crypttabName(); n != "" {
				p.name = n
			}
		}
	}
	return nil
}

// crypttabName returns the name of the crypttab line that names p.dev
// (by path or by LUKS UUID), or "".
func (p *setupPlan) crypttabName() string {
	ents, err := boot.ReadCrypttab(filepath.Join(p.root, "etc/crypttab"))
	if err != nil {
		return ""
	}
	h, err := luks.ReadHeaderFile(p.dev)
	if err != nil {
		return ""
	}
	for _, e := range ents {
		if e.Device == p.dev || strings.EqualFold(strings.Trim(strings.TrimPrefix(e.Device, "UUID="), `"`), h.UUID) {
			return e.Name
		}
	}
	return ""
}

// checkReplace checks that the keyslot to replace is bound.
func (p *setupPlan) checkReplace() error {
	if !p.luks {
		return command.Usagef("--replace is for a LUKS2 volume that has bindings")
	}
	h, err := luks.ReadHeaderFile(p.dev)
	if err != nil {
		return luksError(err, p.dev)
	}
	if _, err := luks.BindingFor(h, p.replace); err != nil {
		return withListHint(fmt.Errorf("replace keyslot %d of %s: %w", p.replace, p.dev, err), p.dev)
	}
	return nil
}

// volumeName makes a /dev/mapper name from a path: "cloud_container" for
// /home/ha/cloud_container.img.
func volumeName(p string) string {
	b := filepath.Base(p)
	if ext := filepath.Ext(b); ext == ".img" || ext == ".luks" || ext == ".bin" {
		b = strings.TrimSuffix(b, ext)
	}
	b = unitSafe(b)
	if b == "" || b == "." {
		b = "data"
	}
	return b
}

// serverSource fetches and verifies a tether or Tang server's
// advertisement and pins its signing key: the one thp names, or the
// first one when the person trusts what is shown.
func serverSource(ctx context.Context, raw, thp string, trust bool, timeout time.Duration) (keySource, error) {
	base := strings.TrimRight(raw, "/")
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return keySource{}, command.Usagef("server %q is not an http:// or https:// URL (for example http://keys.lan:7500)", raw)
	}
	if thp == "" && !trust {
		return keySource{}, command.WithHint(fmt.Errorf("which key of %s do you trust?", base),
			"run \"tether adv %s\", compare its S256 thumbprint with the server's own list (tether server keys list), and give it with --thp; or accept what it shows with --trust-server", base)
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := fetchAdv(ctx, base, thp)
	if err != nil {
		return keySource{}, err
	}
	return keySource{pin: "tang", cfg: map[string]any{"url": base, "thp": r.Config.Thp}, desc: "the server " + base}, nil
}

// smbSource parses //HOST[:PORT]/SHARE/PATH (or \\HOST\SHARE\PATH).
func smbSource(addr, user, passwordFile string) (keySource, error) {
	s := strings.ReplaceAll(addr, `\`, "/")
	s = strings.TrimPrefix(strings.TrimPrefix(s, "smb:"), "//")
	parts := strings.SplitN(s, "/", 3)
	if len(parts) < 3 || parts[0] == "" || parts[1] == "" || strings.Trim(parts[2], "/") == "" {
		return keySource{}, command.Usagef("share address %q: want //SERVER/SHARE/PATH-OF-THE-KEY-FILE, for example //fritz.box/NAS/keys/ha.key", addr)
	}
	host, port := parts[0], 0
	if h, ps, err := net.SplitHostPort(parts[0]); err == nil {
		n, err := strconv.Atoi(ps)
		if err != nil || n <= 0 || n > 65535 {
			return keySource{}, command.Usagef("share address %q: bad port %q", addr, ps)
		}
		host, port = h, n
	}
	cfg := map[string]any{"server": host, "share": parts[1], "path": strings.Trim(parts[2], "/")}
	if port != 0 {
		cfg["port"] = port
	}
	if user != "" {
		cfg["user"] = user
	}
	src := keySource{pin: "smb", cfg: cfg, desc: `the key file \\` + host + `\` + parts[1] + `\` + strings.ReplaceAll(strings.Trim(parts[2], "/"), "/", `\`)}
	if passwordFile != "" {
		cfg["password_file"] = passwordFile
		src.secret = true
	}
	return src, nil
}

// httpsSource pins an HTTPS endpoint's public key: the one given, or the
// one it shows now when the person trusts it. It returns the fingerprint.
func httpsSource(ctx context.Context, raw, pinned string, trust bool, timeout time.Duration) (keySource, string, error) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return keySource{}, "", command.Usagef("%q is not an https:// URL", raw)
	}
	fp, _, err := httpsKey(ctx, u, timeout)
	if err != nil {
		return keySource{}, "", err
	}
	switch {
	case pinned != "" && pinned != fp:
		return keySource{}, "", command.WithHint(fmt.Errorf("%s shows the key %s, not %s", u.Host, fp, pinned),
			"check that you reach the right server; if its key changed on purpose, give the new one")
	case pinned == "" && !trust:
		return keySource{}, "", command.WithHint(fmt.Errorf("which key of %s do you trust? it shows %s", u.Host, fp),
			"compare it with the server's certificate, then give it with --https-pin, or accept it with --trust-https")
	}
	return keySource{pin: "https", cfg: map[string]any{"url": raw, "pin_sha256": fp}, desc: "the endpoint " + raw}, fp, nil
}

// httpsKey connects to u's host and returns the base64 SHA-256 of its
// certificate's public key (what pin_sha256 takes) and its subject.
func httpsKey(ctx context.Context, u *url.URL, timeout time.Duration) (string, string, error) {
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "443")
	}
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: timeout}, Config: &tls.Config{
		// The chain is not checked here on purpose: the key is shown to the
		// person, who decides, and the binding pins exactly this key.
		InsecureSkipVerify: true, ServerName: u.Hostname(),
	}}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return "", "", command.WithHint(fmt.Errorf("connect to %s: %v", host, err), "check the address and that the endpoint runs")
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", "", fmt.Errorf("%s sent no certificate", host)
	}
	return spkiPin(certs[0]), certs[0].Subject.String(), nil
}

func spkiPin(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// createShareKey creates the key file of an smb source on its share (64
// random bytes; an existing file is never replaced).
func createShareKey(ctx context.Context, s keySource, timeout time.Duration) error {
	raw, _ := json.Marshal(s.cfg)
	if err := smbpin.CreateKeyFile(ctx, raw, pin.Options{Timeout: timeout, Warn: io.Discard}); err != nil {
		return fmt.Errorf("create %s: %v", s.desc, err)
	}
	return nil
}

func tpmSource(pcrs string) keySource {
	cfg := map[string]any{}
	desc := "this computer's TPM"
	if pcrs != "" && pcrs != "none" {
		cfg["pcr_ids"] = pcrs
		desc += " (while the boot chain is unchanged: PCR " + pcrs + ")"
	}
	return keySource{pin: "tpm2", cfg: cfg, desc: desc}
}

// trySource encrypts a throwaway secret to one source: it reaches the
// server, reads the share with the password, seals with the TPM — before
// anything is written anywhere. Credentials are allowed in the clear for
// the trial only: the JWE is dropped.
func trySource(ctx context.Context, s keySource, timeout time.Duration) error {
	cfg := map[string]any{}
	for k, v := range s.cfg {
		cfg[k] = v
	}
	if s.secret {
		cfg["allow_plain_credentials"] = true
	}
	raw, _ := json.Marshal(cfg)
	secret := make([]byte, 32)
	rand.Read(secret)
	ctx, cancel := context.WithTimeout(ctx, 2*timeout)
	defer cancel()
	_, err := pin.Encrypt(ctx, s.pin, raw, secret, pin.Options{Timeout: timeout, Warn: io.Discard})
	if err != nil {
		return fmt.Errorf("try %s: %v", s.desc, err)
	}
	return nil
}

// policy composes the sources into one pin and configuration.
func (p *setupPlan) policy() (string, json.RawMessage, error) {
	// Work on copies: the sources stay as asked, for the summary and for
	// a second call.
	var srcs []keySource
	for _, s := range p.sources {
		c := map[string]any{}
		for k, v := range s.cfg {
			c[k] = v
		}
		s.cfg = c
		srcs = append(srcs, s)
	}
	plainErr := func(s keySource) error {
		return command.WithHint(fmt.Errorf("the password of %s would be stored in the clear on the disk, where anyone holding the disk can read it", s.desc),
			"add a second key source that must answer too (a server or the TPM: it then encrypts the password), or accept the risk with --allow-plain-credentials")
	}
	if len(srcs) == 1 {
		s := srcs[0]
		if s.secret {
			if !p.plain {
				return "", nil, plainErr(s)
			}
			s.cfg["allow_plain_credentials"] = true
		}
		raw, _ := json.Marshal(s.cfg)
		return s.pin, raw, nil
	}
	a, b := srcs[0], srcs[1]
	if p.need == "all" && a.secret != b.secret {
		// The source without credentials protects the other's: both
		// must answer, and nothing readable is left on the disk.
		if b.secret {
			a, b = b, a
		}
		prot, _ := json.Marshal(b.cfg)
		a.cfg["protect"] = map[string]any{"pin": b.pin, "config": json.RawMessage(prot)}
		raw, _ := json.Marshal(a.cfg)
		return a.pin, raw, nil
	}
	for _, s := range srcs {
		if s.secret {
			if !p.plain {
				return "", nil, plainErr(s)
			}
			s.cfg["allow_plain_credentials"] = true
		}
	}
	t := 2
	if p.need == "any" {
		t = 1
	}
	pins := map[string][]map[string]any{}
	for _, s := range srcs {
		pins[s.pin] = append(pins[s.pin], s.cfg)
	}
	raw, _ := json.Marshal(map[string]any{"t": t, "pins": pins})
	return "sss", raw, nil
}

// run does what the plan says: bind, install, write crypttab and fstab,
// test, summarise. Before the bind nothing is written.
func (p *setupPlan) run(ctx context.Context, env *Env) error {
	name, cfg, err := p.policy()
	if err != nil {
		return err
	}
	v := &luks.Volume{Path: p.dev, StateDir: env.Getenv("TETHER_LUKS_STATE_DIR"), Log: prefixWriter{env.Stderr},
		PinOptions: pin.Options{Timeout: p.timeout, Warn: env.Stderr}}
	recoveryWhere := ""
	switch {
	case p.create:
		out, where, closeOut, err := p.recoveryOut(env)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.Stderr, "tether: creating %s (%d MiB) with an ext4 filesystem...\n", p.dev, p.size>>20)
		_, err = v.Create(ctx, luks.CreateOptions{Size: p.size, FS: "ext4", Pin: name, Config: cfg, Recovery: out, Progress: env.Stderr})
		closeOut(err)
		if err != nil {
			return luksError(err, p.dev)
		}
		recoveryWhere = where
	case p.luks && p.replace >= 0:
		// regen adds the new binding and verifies it before the old one
		// goes; the passphrase serves if the old source is gone.
		if _, err := v.Regen(ctx, luks.RegenOptions{Slot: p.replace, Pin: name, Config: cfg, Key: p.key}); err != nil {
			return luksError(err, p.dev)
		}
		recoveryWhere = "your existing passphrase of " + p.dev + " still opens it"
	case p.luks:
		if _, err := v.Bind(ctx, luks.BindOptions{Pin: name, Config: cfg, Key: p.key, KeySlot: -1, Slot: -1}); err != nil {
			return luksError(err, p.dev)
		}
		recoveryWhere = "your existing passphrase of " + p.dev + " still opens it"
	default:
		o := luks.EncryptOptions{Pin: name, Config: cfg, Progress: env.Stderr, RecoveryFile: p.recovery}
		if p.recovery == "" {
			o.Recovery = env.Stdout
			recoveryWhere = "printed above, once: write it down"
		} else {
			recoveryWhere = "in " + p.recovery
		}
		fmt.Fprintf(env.Stderr, "tether: encrypting %s in place...\n", p.dev)
		if _, err := v.Encrypt(ctx, o); err != nil {
			return luksError(err, p.dev)
		}
		endLineOnTerminal(env)
	}
	h, err := v.Header()
	if err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "tether: %s is bound (%d binding(s))\n", p.dev, len(luks.Bindings(h)))

	// Boot integration: the units, then the crypttab and fstab lines.
	bin := p.bin
	if bin == "" {
		if bin, err = os.Executable(); err == nil {
			bin, err = filepath.EvalSymlinks(bin)
		}
		if err != nil {
			return err
		}
	}
	if p.rootVol {
		if err := p.finishRoot(ctx, env, bin); err != nil {
			return err
		}
		return p.proveAndSummarize(ctx, env, v, recoveryWhere, false)
	}
	plan, err := boot.Plan("systemd", bin, nil)
	if err != nil {
		return err
	}
	if err := boot.Install(p.root, plan); err != nil {
		return command.WithHint(fmt.Errorf("the volume is bound, but installing the units failed: %w", err), "run tether install systemd as root, then tether setup again")
	}
	e, err := crypttabEntry(p.dev, p.name, "/run/tether/keyd.sock", false, false)
	if err != nil {
		return err
	}
	tab := filepath.Join(p.root, "etc/crypttab")
	os.MkdirAll(filepath.Dir(tab), 0o755)
	line, err := writeCrypttab(tab, e)
	if err != nil {
		return fmt.Errorf("the volume is bound, but writing %s failed: %w", tab, err)
	}
	fmt.Fprintf(env.Stderr, "tether: %s: %s\n", tab, line)
	if p.mount != "" {
		fstab := filepath.Join(p.root, "etc/fstab")
		fl, err := writeFstab(fstab, "/dev/mapper/"+p.name, p.mount)
		if err != nil {
			return fmt.Errorf("the volume is bound, but writing %s failed: %w", fstab, err)
		}
		os.MkdirAll(filepath.Join(p.root, p.mount), 0o755)
		fmt.Fprintf(env.Stderr, "tether: %s: %s\n", fstab, fl)
	}

	live := (p.root == "/" || p.root == "") && exists("/run/systemd/system")
	if live {
		// After crypttab and fstab: systemd's generators read them at
		// daemon-reload. The socket now, not only at the next boot: the
		// volume can be started at once.
		for _, args := range [][]string{{"daemon-reload"}, {"start", "tether-keyd.socket"}} {
			if out, err := exec.Command("systemctl", args...).CombinedOutput(); err != nil {
				fmt.Fprintf(env.Stderr, "tether: warning: systemctl %s: %v: %s\n", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
			}
		}
	}

	return p.proveAndSummarize(ctx, env, v, recoveryWhere, live)
}

// proveAndSummarize tests that the new binding opens the volume, now,
// and says what was done: what unlocks it, what happens at boot and when
// the key source is gone, where the recovery passphrase is.
func (p *setupPlan) proveAndSummarize(ctx context.Context, env *Env, v *luks.Volume, recoveryWhere string, live bool) error {
	u, err := v.Unlock(ctx, luks.UnlockOptions{})
	if err != nil {
		return command.WithHint(fmt.Errorf("the volume is bound and set up, but the unlock test failed: %w", err), "run tether doctor: it says what is wrong and how to fix it")
	}
	w := env.Stderr
	fmt.Fprintf(w, "\nDone. %s unlocks with its binding (keyslot %d tested).\n\n", p.dev, u.Slot)
	fmt.Fprintf(w, "  What unlocks it:   %s\n", describePolicy(p.sources, p.need))
	if p.rootVol {
		fmt.Fprintf(w, "  At boot:           the initramfs (%s, rebuilt with tether in it) opens it as\n", p.gen)
		fmt.Fprintf(w, "                     /dev/mapper/%s before the root is mounted, nothing typed\n", p.name)
		fmt.Fprintf(w, "  If the key source is gone: the console asks for the passphrase, as before, while\n")
		fmt.Fprintf(w, "                     tether keeps trying behind the prompt (tether.deadline= and\n")
		fmt.Fprintf(w, "                     /etc/tether/initramfs.conf set how long it waits first)\n")
		fmt.Fprintf(w, "  Recovery passphrase: %s\n", recoveryWhere)
		fmt.Fprintf(w, "  Check it any time: tether doctor\n")
		return nil
	}
	fmt.Fprintf(w, "  At boot:           it is opened as /dev/mapper/%s once the network is up", p.name)
	if p.mount != "" {
		fmt.Fprintf(w, " and mounted on %s", p.mount)
	}
	fmt.Fprintf(w, "\n  If the key source is gone: the boot goes on without it (nofail); the volume stays\n")
	fmt.Fprintf(w, "                     locked until the source is back, or you open it with the recovery\n")
	fmt.Fprintf(w, "                     passphrase: cryptsetup open %s %s\n", p.dev, p.name)
	if recoveryWhere != "" {
		fmt.Fprintf(w, "  Recovery passphrase: %s\n", recoveryWhere)
	}
	if live {
		unit := "systemd-cryptsetup@" + p.name
		if strings.Contains(p.name, "-") {
			// systemd escapes "-" in instance names.
			unit = `"systemd-cryptsetup@$(systemd-escape ` + p.name + `)"`
		}
		fmt.Fprintf(w, "  Open it now:       systemctl start %s", unit)
		if p.mount != "" {
			fmt.Fprintf(w, " && mount %s", p.mount)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "  Check it any time: tether doctor\n")
	return nil
}

// recoveryOut is where Create writes the recovery passphrase: a new file
// (0600), or stdout. done(err) closes the file, removing it if err.
func (p *setupPlan) recoveryOut(env *Env) (io.Writer, string, func(error), error) {
	if p.recovery == "" {
		return env.Stdout, "printed above, once: write it down", func(error) { endLineOnTerminal(env) }, nil
	}
	f, err := os.OpenFile(p.recovery, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, "", nil, command.WithHint(fmt.Errorf("create the recovery file: %w", err), "give a new file name in a directory that exists (a USB stick)")
	}
	return f, "in " + p.recovery, func(err error) {
		f.Sync()
		f.Close()
		if err != nil {
			os.Remove(p.recovery)
		}
	}, nil
}

func describePolicy(srcs []keySource, need string) string {
	if len(srcs) == 1 {
		return srcs[0].desc
	}
	if need == "any" {
		return srcs[0].desc + " or " + srcs[1].desc + " (either one is enough)"
	}
	return srcs[0].desc + " and " + srcs[1].desc + " (both must answer)"
}

// writeFstab puts "DEV DIR auto _netdev,nofail 0 2" into file, replacing
// the line of DEV and keeping every other line and comment.
func writeFstab(file, dev, dir string) (string, error) {
	if strings.ContainsAny(dir, " \t\n") || !strings.HasPrefix(dir, "/") {
		return "", fmt.Errorf("mount point %q must be an absolute path without blanks", dir)
	}
	line := dev + "\t" + dir + "\tauto\t_netdev,nofail\t0\t2"
	if p, err := filepath.EvalSymlinks(file); err == nil {
		file = p
	}
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var out []string
	replaced := false
	for _, l := range strings.SplitAfter(string(old), "\n") {
		if l == "" {
			continue
		}
		f := strings.Fields(l)
		if len(f) > 0 && f[0] == dev {
			if !replaced {
				out = append(out, line+"\n")
				replaced = true
			}
			continue
		}
		if !strings.HasSuffix(l, "\n") {
			l += "\n"
		}
		out = append(out, l)
	}
	if !replaced {
		out = append(out, line+"\n")
	}
	mode := os.FileMode(0o644)
	if fi, err := os.Stat(file); err == nil {
		mode = fi.Mode().Perm()
	}
	os.MkdirAll(filepath.Dir(file), 0o755)
	return line, atomicWrite(file, []byte(strings.Join(out, "")), mode)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// lineReader reads answers: lines, and passwords without echo on a
// terminal.
type lineReader struct {
	env *Env
	br  *bufio.Reader
	fd  int // the terminal, or -1
}

func newLineReader(env *Env) *lineReader {
	r := &lineReader{env: env, br: bufio.NewReader(env.Stdin), fd: -1}
	if f, ok := env.Stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		r.fd = int(f.Fd())
	}
	return r
}

// errStopped ends an interactive setup whose input ended.
var errStopped = errors.New("setup stopped before the end: nothing was changed")

func (r *lineReader) ask(prompt string) (string, error) {
	fmt.Fprint(r.env.Stdout, prompt)
	s, err := r.br.ReadString('\n')
	if err != nil && (s == "" || err != io.EOF) {
		fmt.Fprintln(r.env.Stdout)
		return "", errStopped
	}
	return strings.TrimSpace(s), nil
}

func (r *lineReader) password(prompt string) ([]byte, error) {
	if r.fd < 0 {
		s, err := r.ask(prompt)
		return []byte(s), err
	}
	fmt.Fprint(r.env.Stdout, prompt)
	b, err := term.ReadPassword(r.fd)
	fmt.Fprintln(r.env.Stdout)
	if err != nil {
		return nil, errStopped
	}
	return b, nil
}

func (r *lineReader) yes(prompt string, def bool) (bool, error) {
	for {
		s, err := r.ask(prompt)
		if err != nil {
			return false, err
		}
		switch strings.ToLower(s) {
		case "":
			return def, nil
		case "y", "yes":
			return true, nil
		case "n", "no":
			return false, nil
		}
		fmt.Fprintln(r.env.Stdout, "Please answer yes or no.")
	}
}

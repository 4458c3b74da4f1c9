package cli

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/luks"
	"github.com/tether-nbde/tether/pin"
)

// setupInteractive asks the person, step by step, and then runs the plan.
// Every answer is checked when it is given; a wrong one is explained and
// asked again. Nothing is written before the last confirmation.
func setupInteractive(env *Env, p *setupPlan) error {
	r := newLineReader(env)
	defer func() { clear(p.key) }()
	if r.fd < 0 {
		return command.WithHint(errors.New("setup asks its questions on a terminal, and stdin is not one"),
			"run it in a terminal, or give the answers as flags (tether setup --help shows them)")
	}
	w := env.Stdout
	ctx := context.Background()
	fmt.Fprintf(w, "tether setup: make a disk unlock by itself, with a key that lives somewhere else.\n")
	fmt.Fprintf(w, "Nothing is changed until you confirm at the end. Ctrl-C stops at any time.\n\n")

	// Step 1: the disk.
	fmt.Fprintf(w, "Step 1 of 4: the disk\n  1) create a new encrypted container file\n  2) use an existing disk, partition or container file\n")
	for {
		c, err := r.ask("Choose 1 or 2: ")
		if err != nil {
			return err
		}
		if c == "1" {
			if err := askNewFile(r, p); err != nil {
				return err
			}
			break
		}
		if c == "2" {
			if err := askDevice(r, p); err != nil {
				return err
			}
			break
		}
		fmt.Fprintln(w, "Please type 1 or 2.")
	}

	// Step 2: where the key lives.
	fmt.Fprintf(w, "\nStep 2 of 4: where the key lives\n")
	fmt.Fprintf(w, "  1) a tether or Tang server on your network\n  2) a key file on an SMB share (a NAS, such as a FRITZ!Box)\n")
	fmt.Fprintf(w, "  3) an HTTPS endpoint\n  4) this computer's TPM chip\n")
	var kinds []string
	for {
		c, err := r.ask("Choose one, or two separated by a comma (for example 2,1): ")
		if err != nil {
			return err
		}
		kinds = nil
		ok := true
		for _, k := range strings.Split(c, ",") {
			k = strings.TrimSpace(k)
			if k < "1" || k > "4" || len(k) != 1 {
				ok = false
			}
			kinds = append(kinds, k)
		}
		if ok && len(kinds) >= 1 && len(kinds) <= 2 && (len(kinds) == 1 || kinds[0] != kinds[1] || kinds[0] == "1") {
			break
		}
		fmt.Fprintln(w, "Please type one or two of the numbers 1 to 4, for example 1 or 2,1.")
	}
	for i, k := range kinds {
		if len(kinds) == 2 {
			fmt.Fprintf(w, "\nKey source %d of 2:\n", i+1)
		}
		var src keySource
		var err error
		switch k {
		case "1":
			src, err = askServer(ctx, r, p)
		case "2":
			src, err = askShare(ctx, r, p)
		case "3":
			src, err = askHTTPS(ctx, r, p)
		case "4":
			src, err = askTPM(ctx, r, p)
		}
		if err != nil {
			return err
		}
		p.sources = append(p.sources, src)
	}
	if len(p.sources) == 2 {
		fmt.Fprintf(w, "\nShould the disk unlock only when both answer (safer: a thief needs both), or when either one does\n(it keeps unlocking when one is down)?\n")
		for {
			c, err := r.ask("both or either [both]: ")
			if err != nil {
				return err
			}
			if c == "" || c == "both" {
				p.need = "all"
				break
			}
			if c == "either" {
				p.need = "any"
				break
			}
			fmt.Fprintln(w, "Please type both or either.")
		}
	}
	if _, _, err := p.policy(); err != nil {
		// Credentials that would be stored in the clear: say so, ask.
		fmt.Fprintf(w, "\nNote: %v.\n", err)
		ok, err := r.yes("Store the password on the disk anyway? [y/N]: ", false)
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("setup stopped: nothing was changed; run it again with a second key source that must answer too (it then protects the password)")
		}
		p.plain = true
	}

	// Step 3: the rest, and the confirmation.
	fmt.Fprintf(w, "\nStep 3 of 4: at boot\n")
	if p.rootVol {
		fmt.Fprintf(w, "%s holds this running system: the initramfs will open it as /dev/mapper/%s,\nso setup installs tether's %s integration and rebuilds the initramfs.\n", p.dev, p.name, p.gen)
	}
	for !p.rootVol {
		n, err := r.ask(fmt.Sprintf("Name of the unlocked volume, /dev/mapper/NAME [%s]: ", p.name))
		if err != nil {
			return err
		}
		if n == "" {
			break
		}
		if strings.ContainsAny(n, " \t/") || unitSafe(n) != n {
			fmt.Fprintln(w, "A name has letters, digits, '.', '_' and '-' only.")
			continue
		}
		p.name = n
		break
	}
	for !p.rootVol {
		m, err := r.ask("Mount it at boot on which directory? (empty: do not mount): ")
		if err != nil {
			return err
		}
		if m != "" && (!strings.HasPrefix(m, "/") || strings.ContainsAny(m, " \t")) {
			fmt.Fprintln(w, "Give an absolute path without blanks, for example /srv/data.")
			continue
		}
		p.mount = m
		break
	}
	if !p.luks {
		for {
			f, err := r.ask("Where should the recovery passphrase be saved? A new file, for example on a USB stick\n(empty: show it here once, to write down): ")
			if err != nil {
				return err
			}
			if f != "" {
				if _, err := os.Lstat(f); err == nil {
					fmt.Fprintf(w, "%s exists already: give a new file name.\n", f)
					continue
				}
				if fi, err := os.Stat(filepath.Dir(f)); err != nil || !fi.IsDir() {
					fmt.Fprintf(w, "The directory %s does not exist.\n", filepath.Dir(f))
					continue
				}
			}
			p.recovery = f
			break
		}
	}
	fmt.Fprintf(w, "\nStep 4 of 4: confirm\n")
	switch {
	case p.create:
		fmt.Fprintf(w, "  create %s (%d MiB, ext4 inside)\n", p.dev, p.size>>20)
	case p.luks && p.replace >= 0:
		fmt.Fprintf(w, "  replace the binding of keyslot %d of %s (its passphrases keep working)\n", p.replace, p.dev)
	case p.luks:
		fmt.Fprintf(w, "  add a key to the LUKS2 volume %s (its passphrases keep working)\n", p.dev)
	default:
		fmt.Fprintf(w, "  ENCRYPT %s IN PLACE: every block is rewritten; keep a backup\n", p.dev)
	}
	fmt.Fprintf(w, "  unlocked by %s\n", describePolicy(p.sources, p.need))
	fmt.Fprintf(w, "  opened at boot as /dev/mapper/%s", p.name)
	if p.mount != "" {
		fmt.Fprintf(w, ", mounted on %s", p.mount)
	}
	if p.rootVol {
		fmt.Fprintf(w, "\n  tether's %s integration installed, the root's line in %s kept (marked for the initramfs),\n  the initramfs rebuilt (%s)", p.gen, filepath.Join(p.root, "etc/crypttab"), strings.Join(rebuildCmd[p.gen], " "))
	} else {
		fmt.Fprintf(w, "\n  tether's units installed, lines added to %s", filepath.Join(p.root, "etc/crypttab"))
	}
	if p.mount != "" {
		fmt.Fprintf(w, " and %s", filepath.Join(p.root, "etc/fstab"))
	}
	fmt.Fprintln(w)
	for {
		c, err := r.ask(fmt.Sprintf("Type the device name %s to go ahead (empty: stop): ", p.dev))
		if err != nil {
			return err
		}
		if c == p.dev {
			break
		}
		if c == "" {
			return errors.New("setup stopped: nothing was changed")
		}
		fmt.Fprintf(w, "That is not %s.\n", p.dev)
	}
	fmt.Fprintln(w)
	return p.run(ctx, env)
}

func askNewFile(r *lineReader, p *setupPlan) error {
	w := r.env.Stdout
	for {
		f, err := r.ask("Path of the new container file (for example /srv/data.img): ")
		if err != nil {
			return err
		}
		s, err := r.ask("Size (for example 2G): ")
		if err != nil {
			return err
		}
		n, err := parseSize(s)
		if err != nil {
			fmt.Fprintf(w, "%q: %v.\n", s, err)
			continue
		}
		p.dev, p.size, p.create, p.name = f, n, true, ""
		if err := p.checkNewFile(); err != nil {
			explain(w, err)
			continue
		}
		return nil
	}
}

func askDevice(r *lineReader, p *setupPlan) error {
	w := r.env.Stdout
	for {
		d, err := r.ask("Device or container file (for example /dev/sdb1): ")
		if err != nil {
			return err
		}
		p.dev, p.name, p.luks, p.bound, p.replace = d, "", false, 0, -1
		if err := p.checkDevice(); err != nil {
			explain(w, err)
			continue
		}
		if !p.luks {
			fmt.Fprintf(w, "%s is not encrypted yet: setup will encrypt it in place (its last 32 MiB must be free).\n", p.dev)
			return nil
		}
		if p.bound > 0 {
			fmt.Fprintf(w, "%s is encrypted and already has these bindings:\n", p.dev)
			h, err := luks.ReadHeaderFile(p.dev)
			if err != nil {
				return err
			}
			for _, b := range luks.Bindings(h) {
				desc := "unreadable"
				if b.Err == nil {
					desc = pin.Describe(b.JWE)
				}
				fmt.Fprintf(w, "  keyslot %d: %s\n", b.Slot, desc)
			}
			for {
				c, err := r.ask("Add a new key source (the others stay), or replace one? add, or a keyslot number [add]: ")
				if err != nil {
					return err
				}
				if c == "" || c == "add" {
					p.replace = -1
					break
				}
				n, err := strconv.Atoi(c)
				if err == nil {
					p.replace = n
					if err = p.checkReplace(); err == nil {
						break
					}
				}
				fmt.Fprintln(w, "Please type add, or the number of a keyslot listed above.")
			}
		} else {
			fmt.Fprintf(w, "%s is encrypted (LUKS2): setup adds a key to it; its passphrase keeps working.\n", p.dev)
		}
		for {
			key, err := r.password("Enter an existing passphrase of " + p.dev + ": ")
			if err != nil {
				return err
			}
			if len(key) == 0 {
				continue
			}
			if err := testAnySlot(p.dev, key); err != nil {
				clear(key)
				fmt.Fprintln(w, "That passphrase does not open it. Try again.")
				continue
			}
			p.key = key
			return nil
		}
	}
}

// testAnySlot checks a passphrase against the volume, changing nothing.
func testAnySlot(dev string, key []byte) error {
	h, err := luks.ReadHeaderFile(dev)
	if err != nil {
		return err
	}
	var r *luks.Runner
	for _, s := range h.Slots() {
		if r.TestKey(context.Background(), dev, s, key) == nil {
			return nil
		}
	}
	return luks.ErrWrongKey
}

func askServer(ctx context.Context, r *lineReader, p *setupPlan) (keySource, error) {
	w := r.env.Stdout
	found := discoverForSetup(ctx, w, p)
	for {
		u, announced, err := chooseServer(r, found)
		if u == "" && err == nil {
			u, err = r.ask("Server address (for example http://keys.lan:7500): ")
		}
		if err != nil {
			return keySource{}, err
		}
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		base := strings.TrimRight(u, "/")
		if pu, err := url.Parse(base); err != nil || pu.Host == "" {
			fmt.Fprintf(w, "%q is not a server address.\n", u)
			continue
		}
		fmt.Fprintf(w, "Asking %s for its identity...\n", base)
		tctx, cancel := context.WithTimeout(ctx, p.timeout)
		adv, err := fetchAdv(tctx, base, "")
		cancel()
		if err != nil {
			fmt.Fprintf(w, "Cannot use %s: %v.\nCheck the address and that the server runs, then try again.\n", base, err)
			continue
		}
		if announced != nil && checkAnnounced(announced, adv, nil) != checkOK {
			// It changed since it was listed: never pin what was not checked.
			fmt.Fprintf(w, "Not using %s: it announced the key %s, but now signs with %s.\n",
				base, strings.Join(announced, ", "), strings.Join(signingThps(adv), ", "))
			continue
		}
		fmt.Fprintf(w, "The server identifies itself with this key (thumbprint):\n")
		for _, k := range adv.Signing {
			fmt.Fprintf(w, "    %s\n", k.S256)
		}
		fmt.Fprintf(w, "Compare it with what the server itself shows (on the server: tether server keys list,\nor tang-show-keys for a Tang server).\n")
		ok, err := r.yes("Is it the same? [y/N]: ", false)
		if err != nil {
			return keySource{}, err
		}
		if !ok {
			fmt.Fprintln(w, "Then this is not your server, or something between you and it answers instead: do not use it.")
			continue
		}
		src := keySource{pin: "tang", cfg: map[string]any{"url": base, "thp": adv.Config.Thp}, desc: "the server " + base}
		if err := trySource(ctx, src, p.timeout); err != nil {
			explain(w, err)
			continue
		}
		return src, nil
	}
}

func askShare(ctx context.Context, r *lineReader, p *setupPlan) (keySource, error) {
	w := r.env.Stdout
	for {
		a, err := r.ask("Share address of the key file (for example //fritz.box/NAS/keys/ha.key): ")
		if err != nil {
			return keySource{}, err
		}
		src, err := smbSource(a, "", "")
		if err != nil {
			explain(w, err)
			continue
		}
		user, err := r.ask("User name on the share (empty: guest): ")
		if err != nil {
			return keySource{}, err
		}
		for {
			var pwFile string
			if user != "" {
				src.cfg["user"] = user
				pw, err := r.password("Password of " + user + ": ")
				if err != nil {
					return keySource{}, err
				}
				// The pin reads the password from a file, never argv; this
				// one lives in memory only.
				pwFile, err = p.memFile(pw)
				clear(pw)
				if err != nil {
					return keySource{}, err
				}
				src.cfg["password_file"] = pwFile
				src.secret = true
			}
			fmt.Fprintf(w, "Reading the key file from the share...\n")
			err := trySource(ctx, src, p.timeout)
			if err != nil && strings.Contains(err.Error(), "does not exist") {
				fmt.Fprintf(w, "The key file %s is not there yet.\n", strings.TrimPrefix(src.desc, "the key file "))
				ok, aerr := r.yes("Create it now on the share, with 64 random bytes? [y/N]: ", false)
				if aerr != nil {
					return keySource{}, aerr
				}
				if ok {
					if err = createShareKey(ctx, src, p.timeout); err == nil {
						fmt.Fprintf(w, "Created. Keep it there: deleting it locks the disk (that is how you revoke it).\n")
						err = trySource(ctx, src, p.timeout)
					}
				}
			}
			if err != nil {
				explain(w, err)
				if user != "" && strings.Contains(strings.ToLower(err.Error()), "password") {
					continue // ask the password again
				}
				break // ask the address again
			}
			return src, nil
		}
	}
}

func askHTTPS(ctx context.Context, r *lineReader, p *setupPlan) (keySource, error) {
	w := r.env.Stdout
	for {
		a, err := r.ask("HTTPS address of the key (for example https://keys.example.net/ha): ")
		if err != nil {
			return keySource{}, err
		}
		u, err := url.Parse(a)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			fmt.Fprintf(w, "%q is not an https:// address.\n", a)
			continue
		}
		fp, subject, err := httpsKey(ctx, u, p.timeout)
		if err != nil {
			explain(w, err)
			continue
		}
		fmt.Fprintf(w, "The endpoint shows the certificate %s with the key\n    %s\n", subject, fp)
		ok, err := r.yes("Is this your endpoint's key? [y/N]: ", false)
		if err != nil {
			return keySource{}, err
		}
		if !ok {
			continue
		}
		src := keySource{pin: "https", cfg: map[string]any{"url": a, "pin_sha256": fp}, desc: "the endpoint " + a}
		if err := trySource(ctx, src, p.timeout); err != nil {
			explain(w, err)
			continue
		}
		return src, nil
	}
}

func askTPM(ctx context.Context, r *lineReader, p *setupPlan) (keySource, error) {
	w := r.env.Stdout
	fmt.Fprintf(w, "The TPM can release the key only while the boot chain is unchanged (Secure Boot state, PCR 7):\n")
	fmt.Fprintf(w, "safer, but after a firmware or boot loader update the disk needs its recovery passphrase once.\n")
	bindPCR, err := r.yes("Bind to the boot state? [Y/n]: ", true)
	if err != nil {
		return keySource{}, err
	}
	pcrs := "none"
	if bindPCR {
		pcrs = "7"
	}
	src := tpmSource(pcrs)
	if err := trySource(ctx, src, p.timeout); err != nil {
		return keySource{}, command.WithHint(err, "this computer's TPM cannot be used: choose another key source")
	}
	return src, nil
}

// explain prints an error and its hint for the person, and setup asks again.
func explain(w interface{ Write([]byte) (int, error) }, err error) {
	fmt.Fprintf(w, "%v.\n", strings.TrimSuffix(err.Error(), "."))
	if hint, ok := command.Hint(err); ok {
		fmt.Fprintf(w, "  (%s)\n", hint)
	}
}

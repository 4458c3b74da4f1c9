package boot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// FirstBootConf is where "tether install initramfs-tools|dracut
// --first-boot" writes the first-boot settings; the hook (or dracut
// module 91tether-first-boot) copies it into the initramfs, whose script
// tether-first-boot sources it.
const FirstBootConf = "/etc/tether/first-boot.conf"

// FirstBoot is what the initramfs does on a factory image's first boot:
// encrypt Device in place, bind it to Pin with Config, and open it as Name.
type FirstBoot struct {
	Device   string // a path, PARTUUID= or PARTLABEL=: names that survive encryption
	Name     string // the device-mapper name of the opened root (root=/dev/mapper/NAME)
	Pin      string
	Config   string // the pin's JSON configuration
	Recovery string // "none", or DEV:PATH, a file on a removable medium
}

// Validate checks the settings before anything is written, so that a
// mistake shows at install time and not at the first boot.
func (f FirstBoot) Validate() error {
	d := f.Device
	switch {
	case strings.HasPrefix(d, "/dev/"), strings.HasPrefix(d, "PARTUUID="), strings.HasPrefix(d, "PARTLABEL="):
	case strings.HasPrefix(d, "UUID="), strings.HasPrefix(d, "LABEL="):
		return fmt.Errorf("first boot: %s names the filesystem, which the LUKS header replaces, so an interrupted run could not find its device again: name the partition by its path, PARTUUID= or PARTLABEL= (lsblk -o PATH,PARTUUID,PARTLABEL)", d)
	default:
		return fmt.Errorf("first boot: the root partition %q must be a /dev path, PARTUUID= or PARTLABEL=", d)
	}
	if f.Name == "" || strings.ContainsAny(f.Name, " \t\n/'\"\\$`") {
		return fmt.Errorf("first boot: the volume name %q must be a plain name (root=/dev/mapper/NAME)", f.Name)
	}
	if f.Pin == "" || strings.ContainsAny(f.Pin, " \t\n/'\"\\$`") {
		return fmt.Errorf("first boot: the pin name %q is not valid", f.Pin)
	}
	if !json.Valid([]byte(f.Config)) {
		return fmt.Errorf("first boot: the %s configuration is not valid JSON: quote it in single quotes, e.g. '{\"pcr_ids\":\"7\"}'", f.Pin)
	}
	switch r := f.Recovery; {
	case r == "none":
	case strings.Contains(r, ":"):
		dev, path, _ := strings.Cut(r, ":")
		if dev == "" || path == "" || strings.Contains(path, "..") {
			return fmt.Errorf("first boot: --first-boot-recovery %q: want DEV:PATH (e.g. LABEL=KEYS:/root.key, a file on a removable medium) or none", r)
		}
	default:
		return fmt.Errorf("first boot: --first-boot-recovery %q: want DEV:PATH (e.g. LABEL=KEYS:/root.key, a file on a removable medium) or none", r)
	}
	return nil
}

// needsNetwork says whether the policy may need the network in the
// initramfs: any pin but tpm2 alone.
func (f FirstBoot) needsNetwork() bool {
	if f.Pin == "tpm2" {
		return false
	}
	if f.Pin == "sss" {
		var c struct {
			Pins map[string]json.RawMessage `json:"pins"`
		}
		if json.Unmarshal([]byte(f.Config), &c) == nil && len(c.Pins) > 0 {
			for p := range c.Pins {
				if p != "tpm2" {
					return true
				}
			}
			return false
		}
	}
	return true
}

// shellQuote quotes s for a POSIX shell: the file is sourced, so nothing
// in it may expand.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Files returns the first-boot configuration file and what acts on it in
// target's initramfs: the local-top script tether-first-boot
// (initramfs-tools), or dracut module 91tether-first-boot (a service
// before systemd-cryptsetup) with bin as the tether binary's path.
func (f FirstBoot) Files(target, bin string) ([]InstallFile, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	var out []InstallFile
	add := func(src, dst string, mode os.FileMode) error {
		data, err := files.ReadFile("files/" + src)
		if err != nil {
			return err
		}
		data = []byte(strings.ReplaceAll(string(data), "@BIN@", bin))
		out = append(out, InstallFile{Path: dst, Mode: mode, Data: data})
		return nil
	}
	switch target {
	case "initramfs-tools":
		if err := add("initramfs-tools/scripts/local-top/tether-first-boot", "/etc/initramfs-tools/scripts/local-top/tether-first-boot", 0o755); err != nil {
			return nil, err
		}
	case "dracut":
		const dir = "/usr/lib/dracut/modules.d/91tether-first-boot/"
		for _, f := range []struct {
			name string
			mode os.FileMode
		}{{"module-setup.sh", 0o755}, {"tether-first-boot.sh", 0o755}, {"tether-first-boot.service", 0o644}} {
			if err := add("dracut/91tether-first-boot/"+f.name, dir+f.name, f.mode); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("first boot: no first-boot mode for %s (want initramfs-tools or dracut)", target)
	}
	network := "no"
	if f.needsNetwork() {
		network = "yes"
	}
	rebuild := map[string]string{"initramfs-tools": "update-initramfs -u", "dracut": "dracut -f"}[target]
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by \"tether install %s --first-boot\"; copied into the\n", target)
	b.WriteString("# initramfs, whose tether-first-boot script encrypts the root partition\n")
	fmt.Fprintf(&b, "# in place at the first boot. See docs/BOOT.md. After a change, rebuild\n# the initramfs: %s\n", rebuild)
	for _, kv := range [][2]string{
		{"TETHER_FB_DEVICE", f.Device}, {"TETHER_FB_NAME", f.Name}, {"TETHER_FB_PIN", f.Pin},
		{"TETHER_FB_CONFIG", f.Config}, {"TETHER_FB_RECOVERY", f.Recovery}, {"TETHER_FB_NETWORK", network},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	// The pin configuration can hold a Tang advertisement but no secret;
	// root-only all the same, like the rest of /etc/tether.
	return append([]InstallFile{{Path: FirstBootConf, Mode: 0o600, Data: []byte(b.String())}}, out...), nil
}

// CrypttabFile returns /etc/crypttab of the image at root with the root
// volume's line added ("NAME DEV none luks", with Debian's "initramfs"
// option for initramfs-tools, whose cryptroot then opens it on every
// later boot and holds its passphrase prompt), or nil when it has a line
// for Name already. A line for Name on another device is refused: the
// image would open something else as its root.
func (f FirstBoot) CrypttabFile(root, target string) (*InstallFile, error) {
	path := filepath.Join(root, "etc/crypttab")
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	ents, err := ParseCrypttab(bytes.NewReader(old))
	if err != nil {
		return nil, fmt.Errorf("first boot: %s: %w", path, err)
	}
	for _, e := range ents {
		if e.Name != f.Name {
			continue
		}
		if e.Device != f.Device {
			return nil, fmt.Errorf("first boot: %s already opens %s as %s, not %s: remove that line, or name the volume with --first-boot-name", path, e.Device, e.Name, f.Device)
		}
		return nil, nil
	}
	e := CrypttabEntry{Name: f.Name, Device: f.Device, KeyFile: "none", Options: []string{"luks"}}
	if target == "initramfs-tools" {
		e.Options = append(e.Options, "initramfs")
	}
	data := append([]byte{}, old...)
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	data = append(data, "# The root, encrypted in place at the first boot (tether install --first-boot).\n"+e.String()+"\n"...)
	return &InstallFile{Path: "/etc/crypttab", Mode: 0o644, Data: data}, nil
}

package boot

import (
	"encoding/json"
	"fmt"
	"strings"
)

// FirstBootConf is where "tether install initramfs-tools --first-boot"
// writes the first-boot settings; the hook copies it into the initramfs,
// whose local-top script tether-first-boot sources it.
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

// Files returns the first-boot configuration file and the local-top
// script that acts on it.
func (f FirstBoot) Files() ([]InstallFile, error) {
	if err := f.Validate(); err != nil {
		return nil, err
	}
	script, err := files.ReadFile("files/initramfs-tools/scripts/local-top/tether-first-boot")
	if err != nil {
		return nil, err
	}
	network := "no"
	if f.needsNetwork() {
		network = "yes"
	}
	var b strings.Builder
	b.WriteString("# Written by \"tether install initramfs-tools --first-boot\"; copied into the\n")
	b.WriteString("# initramfs, where scripts/local-top/tether-first-boot encrypts the root\n")
	b.WriteString("# partition in place at the first boot. See docs/BOOT.md. After a change,\n")
	b.WriteString("# rebuild the initramfs: update-initramfs -u\n")
	for _, kv := range [][2]string{
		{"TETHER_FB_DEVICE", f.Device}, {"TETHER_FB_NAME", f.Name}, {"TETHER_FB_PIN", f.Pin},
		{"TETHER_FB_CONFIG", f.Config}, {"TETHER_FB_RECOVERY", f.Recovery}, {"TETHER_FB_NETWORK", network},
	} {
		fmt.Fprintf(&b, "%s=%s\n", kv[0], shellQuote(kv[1]))
	}
	// The pin configuration can hold a Tang advertisement but no secret;
	// root-only all the same, like the rest of /etc/tether.
	return []InstallFile{
		{Path: FirstBootConf, Mode: 0o600, Data: []byte(b.String())},
		{Path: "/etc/initramfs-tools/scripts/local-top/tether-first-boot", Mode: 0o755, Data: script},
	}, nil
}

package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tether-nbde/tether/boot"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/doctor"
)

// The root volume: setup binds the LUKS2 volume the running system is on
// as it binds any other (a keyslot is added; its passphrases keep
// working), but the initramfs opens it, not systemd: so setup installs
// tether's initramfs integration instead of the units, marks the root's
// crypttab line for the initramfs, rebuilds the initramfs and checks that
// the new images hold what the binding needs.

// checkRootVolume accepts dev, which the running root is on, when it is
// LUKS2 already; what says how / is mounted (for messages).
func (p *setupPlan) checkRootVolume(what string) error {
	if !p.luks {
		return command.WithHint(fmt.Errorf("%s holds the running system (%s) and is not encrypted: setup does not encrypt the disk it runs from", p.dev, what),
			"encrypt the root at the next boot instead: tether install initramfs-tools --first-boot (docs/BOOT.md, \"First boot\")")
	}
	if p.mount != "" {
		return command.Usagef("%s holds the running system (%s): the boot mounts it already; leave out --mount", p.dev, what)
	}
	p.gen = initramfsGenerator(p.root)
	if p.gen == "" {
		return command.WithHint(fmt.Errorf("%s holds the running system (%s), but neither initramfs-tools nor dracut is installed: nothing could open it at boot", p.dev, what),
			"install one (apt install initramfs-tools), then run tether setup again")
	}
	name, err := rootMapping(p.root, p.dev)
	if err != nil {
		return err
	}
	if p.name != "" && p.name != name {
		return command.WithHint(fmt.Errorf("%s is opened as /dev/mapper/%s: setup keeps the root's name (fstab and the boot loader name it)", p.dev, name),
			"leave out -n, or give -n %s", name)
	}
	p.name, p.rootVol = name, true
	return nil
}

// openAsLUKS2 reports whether the block device dev is open as a LUKS2
// volume: a dm-crypt device on top of it has a CRYPT-LUKS2- uuid.
func openAsLUKS2(dev string) bool {
	num := blockNum(dev)
	if num == "" {
		return false
	}
	uuids, _ := filepath.Glob("/sys/dev/block/" + num + "/holders/*/dm/uuid")
	for _, u := range uuids {
		if b, err := os.ReadFile(u); err == nil && strings.HasPrefix(string(b), "CRYPT-LUKS2-") {
			return true
		}
	}
	return false
}

// initramfsGenerator is what builds the initramfs of the system under
// root: "initramfs-tools", "dracut", or "" for neither.
func initramfsGenerator(root string) string {
	has := func(p string) bool { return exists(filepath.Join(root, p)) }
	switch {
	case has("/usr/sbin/update-initramfs"):
		return "initramfs-tools"
	case has("/usr/bin/dracut"), has("/usr/sbin/dracut"):
		return "dracut"
	}
	return ""
}

// rootMapping is the name the root volume dev is opened as: from its
// crypttab line (the one the initramfs reads), else from the open
// device-mapper device on top of it.
func rootMapping(root, dev string) (string, error) {
	tab := filepath.Join(root, "etc/crypttab")
	ents, err := boot.ReadCrypttab(tab)
	if err != nil && !os.IsNotExist(err) {
		return "", fmt.Errorf("read %s: %w", tab, err)
	}
	num := blockNum(dev)
	for _, e := range ents {
		if p, err := boot.ResolveDevice(e.Device); err == nil && (p == dev || (num != "" && blockNum(p) == num)) {
			return e.Name, nil
		}
	}
	if num != "" {
		holders, _ := filepath.Glob("/sys/dev/block/" + num + "/holders/*/dm/name")
		for _, h := range holders {
			if b, err := os.ReadFile(h); err == nil && strings.TrimSpace(string(b)) != "" {
				return strings.TrimSpace(string(b)), nil
			}
		}
	}
	return "", command.WithHint(fmt.Errorf("%s holds the running system, but it is not open and has no line in %s", dev, tab),
		"add the root's line first: tether crypttab -d %s -n NAME --root --write %s", dev, tab)
}

// packagedHook is where the tether package puts the integration of each
// initramfs generator.
var packagedHook = map[string]string{
	"initramfs-tools": "/usr/share/initramfs-tools/hooks/tether",
	"dracut":          "/usr/lib/dracut/modules.d/60tether/module-setup.sh",
}

// rebuildCmd is the command that rebuilds every initramfs image of gen.
var rebuildCmd = map[string][]string{
	"initramfs-tools": {"update-initramfs", "-u", "-k", "all"},
	"dracut":          {"dracut", "-f", "--regenerate-all"},
}

// finishRoot installs the initramfs integration for the bound root
// volume, points its crypttab line at the initramfs, rebuilds the
// initramfs (on the running system) and checks the images. It returns
// what the summary says happens at boot.
func (p *setupPlan) finishRoot(ctx context.Context, env *Env, bin string) error {
	if packaged := packagedHook[p.gen]; exists(filepath.Join(p.root, packaged)) {
		// The tether package ships it; a second copy in /etc would
		// shadow the package's updates.
		fmt.Fprintf(env.Stderr, "tether: tether's %s integration is installed (%s)\n", p.gen, packaged)
	} else {
		plan, err := boot.Plan(p.gen, bin, nil)
		if err != nil {
			return err
		}
		if err := boot.Install(p.root, plan); err != nil {
			return command.WithHint(fmt.Errorf("the root volume is bound, but installing tether's %s integration failed: %w", p.gen, err),
				"run tether install %s as root, then %s", p.gen, strings.Join(rebuildCmd[p.gen], " "))
		}
		fmt.Fprintf(env.Stderr, "tether: installed tether's %s integration\n", p.gen)
	}
	e, err := crypttabEntry(p.dev, p.name, "", false, true)
	if err != nil {
		return err
	}
	tab := filepath.Join(p.root, "etc/crypttab")
	line, err := writeCrypttab(tab, e)
	if err != nil {
		return fmt.Errorf("the root volume is bound, but writing %s failed: %w", tab, err)
	}
	fmt.Fprintf(env.Stderr, "tether: %s: %s\n", tab, line)

	rebuild := strings.Join(rebuildCmd[p.gen], " ")
	if p.root != "/" && p.root != "" {
		fmt.Fprintf(env.Stderr, "tether: the initramfs of the system in %s is not rebuilt from here: run %s in it (chroot %s %s)\n", p.root, rebuild, p.root, rebuild)
		return nil
	}
	fmt.Fprintf(env.Stderr, "tether: rebuilding the initramfs (%s); this takes a minute...\n", rebuild)
	cmd := exec.CommandContext(ctx, rebuildCmd[p.gen][0], rebuildCmd[p.gen][1:]...)
	cmd.Stdout, cmd.Stderr = env.Stderr, env.Stderr
	if err := cmd.Run(); err != nil {
		return command.WithHint(fmt.Errorf("the root volume is bound (its passphrase still opens it), but %s failed: %v", rebuild, err),
			"fix what it said, then run %s; tether doctor checks the result", rebuild)
	}
	// The images must hold tether and what this binding needs: doctor's
	// checks of the initramfs, for the root only.
	var bad []doctor.Problem
	for _, pr := range doctor.Check(ctx, doctor.Options{Root: p.root, Timeout: p.timeout, OK: io.Discard}) {
		if strings.HasPrefix(pr.Subject, "initramfs") {
			bad = append(bad, pr)
		}
	}
	if len(bad) > 0 {
		for _, pr := range bad {
			fmt.Fprintf(env.Stderr, "tether: %s\n", pr)
		}
		return command.WithHint(fmt.Errorf("the root volume is bound (its passphrase still opens it), but the new initramfs cannot open it unattended"),
			"run the fix above, then tether doctor")
	}
	return nil
}

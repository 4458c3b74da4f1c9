package boot

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
)

//go:embed files
var files embed.FS

// InstallFile is one file Install writes.
type InstallFile struct {
	Path string // absolute path on the target system
	Mode os.FileMode
	Data []byte
}

// Targets lists what Install knows how to install.
var Targets = []string{"systemd", "dracut", "initramfs-tools"}

// Plan returns the files of target with bin as the path of the tether
// binary on the target system. volumes adds, for systemd, a per-volume
// socket /run/cryptsetup-keys.d/<volume>.key to tether-keyd.socket.
func Plan(target, bin string, volumes []string) ([]InstallFile, error) {
	if !filepath.IsAbs(bin) {
		return nil, fmt.Errorf("the tether binary's path must be absolute, not %q", bin)
	}
	// The smb pin's helper, installed next to tether: the initramfs gets it
	// too when it is there.
	smbHelper := filepath.Join(filepath.Dir(bin), "tether-smb")
	var out []InstallFile
	add := func(src, dst string, mode os.FileMode) error {
		data, err := fs.ReadFile(files, "files/"+src)
		if err != nil {
			return err
		}
		data = []byte(strings.NewReplacer("@BIN@", bin, "@SMB@", smbHelper).Replace(string(data)))
		out = append(out, InstallFile{Path: dst, Mode: mode, Data: data})
		return nil
	}
	link := func(dst, to string) {
		out = append(out, InstallFile{Path: dst, Mode: os.ModeSymlink, Data: []byte(to)})
	}
	var err error
	must := func(e error) {
		if err == nil {
			err = e
		}
	}
	const etc = "/etc/systemd/system/"
	switch target {
	case "systemd":
		for _, u := range []string{"tether-keyd.socket", "tether-keyd.service", "tether-askpass.path", "tether-askpass.service",
			"tether-agent.service", "tether-agent@.service", "tether-secret@.service", "tether-heal.service"} {
			must(add("systemd/"+u, etc+u, 0o644))
		}
		must(add("systemd/tether-cryptsetup.conf", etc+"systemd-cryptsetup@.service.d/tether.conf", 0o644))
		// What "systemctl enable" would do, so that --root works offline.
		link(etc+"cryptsetup.target.wants/tether-keyd.socket", etc+"tether-keyd.socket")
		link(etc+"remote-cryptsetup.target.wants/tether-keyd.socket", etc+"tether-keyd.socket")
		link(etc+"cryptsetup.target.wants/tether-askpass.path", etc+"tether-askpass.path")
		link(etc+"remote-cryptsetup.target.wants/tether-askpass.path", etc+"tether-askpass.path")
		// Skipped by its condition until the machine is enrolled.
		link(etc+"multi-user.target.wants/tether-agent.service", etc+"tether-agent.service")
		// _netdev volumes hang off remote-cryptsetup.target, which is
		// only reached if something wants it.
		link(etc+"multi-user.target.wants/remote-cryptsetup.target", "/lib/systemd/system/remote-cryptsetup.target")
		if len(volumes) > 0 {
			var b strings.Builder
			b.WriteString("# Per-volume key sockets: systemd-cryptsetup looks for\n# /run/cryptsetup-keys.d/<volume>.key when crypttab's key field is none,\n# and keeps LUKS2 token plugins as a fallback.\n[Socket]\n")
			for _, v := range volumes {
				if strings.ContainsAny(v, "/ \t\n") || v == "" {
					return nil, fmt.Errorf("volume name %q cannot be a socket name", v)
				}
				fmt.Fprintf(&b, "ListenStream=/run/cryptsetup-keys.d/%s.key\n", v)
			}
			out = append(out, InstallFile{Path: etc + "tether-keyd.socket.d/volumes.conf", Mode: 0o644, Data: []byte(b.String())})
		}
	case "dracut":
		const dir = "/usr/lib/dracut/modules.d/60tether/"
		must(add("dracut/60tether/module-setup.sh", dir+"module-setup.sh", 0o755))
		must(add("dracut/60tether/tether-hook.sh", dir+"tether-hook.sh", 0o755))
		must(add("dracut/60tether/99-tether-dhcp.network", dir+"99-tether-dhcp.network", 0o644))
		must(add("systemd/tether-askpass.path", dir+"tether-askpass.path", 0o644))
		must(add("systemd/tether-askpass.service", dir+"tether-askpass.service", 0o644))
	case "initramfs-tools":
		must(add("initramfs-tools/hooks/tether", "/etc/initramfs-tools/hooks/tether", 0o755))
		must(add("initramfs-tools/scripts/local-top/tether", "/etc/initramfs-tools/scripts/local-top/tether", 0o755))
		must(add("initramfs-tools/conf.d/tether", "/etc/initramfs-tools/conf.d/tether", 0o644))
		must(add("initramfs-tools/scripts/local-bottom/tether", "/etc/initramfs-tools/scripts/local-bottom/tether", 0o755))
	default:
		return nil, fmt.Errorf("unknown target %q (want one of %s)", target, strings.Join(Targets, ", "))
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// HealEnabled is what "systemctl enable tether-heal.service" makes, for
// Install: tether-heal.service is installed by Plan but not enabled, since
// resealing by itself is a choice the owner makes (docs/TPM2.md).
func HealEnabled() InstallFile {
	const etc = "/etc/systemd/system/"
	return InstallFile{Path: etc + "multi-user.target.wants/tether-heal.service", Mode: os.ModeSymlink, Data: []byte(etc + "tether-heal.service")}
}

// Install writes files under root ("" or "/" is the running system),
// atomically one by one, replacing what an earlier Install wrote.
func Install(root string, plan []InstallFile) error {
	for _, f := range plan {
		dst := filepath.Join(root, f.Path)
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if f.Mode&os.ModeSymlink != 0 {
			if cur, err := os.Readlink(dst); err == nil && cur == string(f.Data) {
				continue
			}
			os.Remove(dst)
			if err := os.Symlink(string(f.Data), dst); err != nil {
				return err
			}
			continue
		}
		if err := atomicfile.Write(dst, f.Data, f.Mode); err != nil {
			return fmt.Errorf("install %s: %w", dst, err)
		}
	}
	return nil
}

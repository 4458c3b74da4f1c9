package boot_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/boot"
)

// firstBootConf returns the first-boot.conf that f writes.
func firstBootConf(t testing.TB, f boot.FirstBoot) string {
	files, err := f.Files("initramfs-tools", "/usr/bin/tether")
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range files {
		if x.Path == boot.FirstBootConf {
			if x.Mode != 0o600 {
				t.Errorf("%s has mode %o, want 0600", x.Path, x.Mode)
			}
			return string(x.Data)
		}
	}
	t.Fatalf("no %s in %v", boot.FirstBootConf, files)
	return ""
}

// TestFirstBootConfSourced sources the written file with the real sh, as
// the initramfs does, and checks that every value comes back as given,
// whatever quotes or shell syntax the pin configuration holds.
func TestFirstBootConfSourced(t *testing.T) {
	f := boot.FirstBoot{Device: "PARTUUID=1b2c-02", Name: "root", Pin: "sss",
		Config:   `{"t":1,"pins":{"tpm2":[{"pcr_ids":"7"}],"tang":[{"url":"http://k'y$(touch /x)` + "`id`" + `\\n"}]}}`,
		Recovery: "LABEL=KEYS:/it's here.key"}
	conf := firstBootConf(t, f)
	out, err := exec.Command("sh", "-c", conf+"\nprintf '%s\\n' \"$TETHER_FB_DEVICE\" \"$TETHER_FB_NAME\" \"$TETHER_FB_PIN\" \"$TETHER_FB_CONFIG\" \"$TETHER_FB_RECOVERY\" \"$TETHER_FB_NETWORK\"").Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	want := []string{f.Device, f.Name, f.Pin, f.Config, f.Recovery, "yes"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("sourced:\n%q\nwant:\n%q", got, want)
	}
}

// TestFirstBootTargets: both initramfs generators get the same settings
// file and their own script, which the shell parses, with the tether
// binary's path filled in; dracut's service runs the script where the
// module installs it.
func TestFirstBootTargets(t *testing.T) {
	f := boot.FirstBoot{Device: "PARTLABEL=root", Name: "root", Pin: "tpm2", Config: `{"pcr_ids":"7"}`, Recovery: "none"}
	want := map[string][]string{
		"initramfs-tools": {"/etc/initramfs-tools/scripts/local-top/tether-first-boot"},
		"dracut": {"/usr/lib/dracut/modules.d/91tether-first-boot/module-setup.sh",
			"/usr/lib/dracut/modules.d/91tether-first-boot/tether-first-boot.sh",
			"/usr/lib/dracut/modules.d/91tether-first-boot/tether-first-boot.service"},
	}
	var confs []string
	for target, paths := range want {
		files, err := f.Files(target, "/opt/x/tether")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]boot.InstallFile{}
		for _, x := range files {
			got[x.Path] = x
			if strings.Contains(string(x.Data), "@BIN@") {
				t.Errorf("%s: %s still has @BIN@", target, x.Path)
			}
		}
		confs = append(confs, string(got[boot.FirstBootConf].Data))
		for _, p := range paths {
			x, ok := got[p]
			if !ok {
				t.Errorf("%s: no %s", target, p)
				continue
			}
			if strings.HasSuffix(p, ".service") {
				if !strings.Contains(string(x.Data), "ExecStart=/usr/lib/tether/tether-first-boot\n") {
					t.Errorf("%s runs something else than the script module-setup.sh installs", p)
				}
				continue
			}
			if x.Mode != 0o755 {
				t.Errorf("%s: mode %o", p, x.Mode)
			}
			shell := "sh"
			if strings.HasPrefix(string(x.Data), "#!/bin/bash") {
				shell = "bash"
			}
			if out, err := exec.Command(shell, "-n", "-c", string(x.Data)).CombinedOutput(); err != nil {
				t.Errorf("%s -n %s: %v\n%s", shell, p, err, out)
			}
		}
		if target == "dracut" && !strings.Contains(string(got[want["dracut"][1]].Data), "/opt/x/tether luks encrypt") {
			t.Errorf("the dracut script does not run the installed tether")
		}
	}
	// The settings themselves (not the comment naming the generator).
	settings := func(conf string) string {
		var b strings.Builder
		for _, l := range strings.Split(conf, "\n") {
			if strings.HasPrefix(l, "TETHER_FB_") {
				b.WriteString(l + "\n")
			}
		}
		return b.String()
	}
	if a, b := settings(confs[0]), settings(confs[1]); a == "" || a != b {
		t.Errorf("the settings differ between the targets:\n%s\n%s", a, b)
	}
	if _, err := f.Files("systemd", "/usr/bin/tether"); err == nil {
		t.Errorf("a first-boot mode for systemd was written")
	}
}

func TestFirstBootNetwork(t *testing.T) {
	for _, c := range []struct {
		pin, cfg, want string
	}{
		{"tpm2", `{"pcr_ids":"7"}`, "no"},
		{"sss", `{"t":2,"pins":{"tpm2":[{"pcr_ids":"7"},{"pcr_ids":"0"}]}}`, "no"},
		{"sss", `{"t":1,"pins":{"tpm2":[{}],"tang":[{"url":"http://k"}]}}`, "yes"},
		{"tang", `{"url":"http://k"}`, "yes"},
		{"managed", `{}`, "yes"},
	} {
		conf := firstBootConf(t, boot.FirstBoot{Device: "/dev/sda2", Name: "root", Pin: c.pin, Config: c.cfg, Recovery: "none"})
		if !strings.Contains(conf, "TETHER_FB_NETWORK='"+c.want+"'") {
			t.Errorf("%s %s: want network %s:\n%s", c.pin, c.cfg, c.want, conf)
		}
	}
}

func TestFirstBootValidate(t *testing.T) {
	ok := boot.FirstBoot{Device: "/dev/sda2", Name: "root", Pin: "tpm2", Config: `{}`, Recovery: "none"}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		change func(*boot.FirstBoot)
		want   string
	}{
		{func(f *boot.FirstBoot) { f.Device = "LABEL=root" }, "PARTUUID="},
		{func(f *boot.FirstBoot) { f.Device = "UUID=abcd" }, "names the filesystem"},
		{func(f *boot.FirstBoot) { f.Device = "sda2" }, "/dev path"},
		{func(f *boot.FirstBoot) { f.Name = "a b" }, "plain name"},
		{func(f *boot.FirstBoot) { f.Config = `{"pcr_ids":` }, "not valid JSON"},
		{func(f *boot.FirstBoot) { f.Recovery = "" }, "or none"},
		{func(f *boot.FirstBoot) { f.Recovery = "/root.key" }, "DEV:PATH"},
		{func(f *boot.FirstBoot) { f.Recovery = "LABEL=K:" }, "DEV:PATH"},
	} {
		f := ok
		c.change(&f)
		err := f.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want an error with %q", f, err, c.want)
		}
		if _, err := f.Files("dracut", "/usr/bin/tether"); err == nil {
			t.Errorf("%+v: Files wrote a configuration Validate refuses", f)
		}
	}
}

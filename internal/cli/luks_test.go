package cli

import (
	"bytes"
	"strings"
	"testing"
)

func runCLI(t *testing.T, stdin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	env := &Env{Stdin: strings.NewReader(stdin), Stdout: &o, Stderr: &e, Getenv: func(string) string { return "" }}
	code = Run(args, env)
	return o.String(), e.String(), code
}

func TestLuksUsageIsAManual(t *testing.T) {
	for _, name := range []string{"bind", "unbind", "pass", "list", "regen", "report", "unlock", "create", "encrypt", "repair"} {
		out, _, code := runCLI(t, "", "help", "luks", name)
		if code != 0 {
			t.Errorf("help luks %s: exit %d", name, code)
		}
		for _, want := range []string{"Usage: tether luks " + name, "Options:", "-d DEV", "--state-dir", "default"} {
			if name == "create" && want == "-d DEV" {
				continue
			}
			if !strings.Contains(out, want) {
				t.Errorf("help luks %s: no %q", name, want)
			}
		}
		if name != "repair" && !strings.Contains(out, "$ ") {
			t.Errorf("help luks %s: no example", name)
		}
	}
}

func TestLuksUsageErrors(t *testing.T) {
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"luks", "bind", "tang", "{}"}, 2, "-d DEV"},
		{[]string{"luks", "bind", "-d", "x.img"}, 2, "want PIN and CONFIG"},
		{[]string{"luks", "bind", "-d", "x.img", "tang", "{url"}, 1, "not valid JSON"},
		{[]string{"luks", "unbind", "-d", "x.img"}, 2, "-s SLOT"},
		{[]string{"luks", "pass", "-d", "x.img"}, 2, "-s SLOT"},
		{[]string{"luks", "regen", "-d", "x.img"}, 2, "-s SLOT"},
		{[]string{"luks", "create", "x.img", "tang", "{}"}, 2, "--size"},
		{[]string{"luks", "create", "x.img", "--size", "12Q", "tang", "{}"}, 2, "not a size"},
		{[]string{"luks", "list", "-d", "/nonexistent/x.img"}, 1, "check the device"},
		{[]string{"luks", "bind", "-d", "/nonexistent/x.img", "tang", "{}"}, 1, "no such file"},
	}
	for _, c := range cases {
		_, stderr, code := runCLI(t, "", c.args...)
		if code != c.code || !strings.Contains(stderr, c.want) || !strings.HasPrefix(stderr, "tether: error: ") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", c.args, code, stderr, c.code, c.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "512K": 512 << 10, "128M": 128 << 20, "128MiB": 128 << 20, "2G": 2 << 30, "1t": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "1.5G", "12Q", "0"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
}

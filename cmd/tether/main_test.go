package main

import (
	"bytes"
	"encoding/base64"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestStartupDeps guards tether's start-up time. Every package a binary
// links runs its initialisation on every start, so on every boot unlock;
// these are kept out of tether on purpose (docs/DESIGN.md, "Client
// latency").
func TestStartupDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		deps[p] = true
	}
	if !deps["github.com/tether-nbde/tether/pin/smb"] {
		t.Fatal("go list output does not list the smb pin: this test checks nothing")
	}
	for p, why := range map[string]string{
		"github.com/hirochachacha/go-smb2":            "the SMB client (about 0.4 ms of init) belongs in tether-smb",
		"github.com/tether-nbde/tether/pin/smb/share": "the SMB transport belongs in tether-smb",
		"golang.org/x/sys/cpu":                        "its init traps to the hypervisor a dozen times; internal/p521 asks CPUID itself",
	} {
		if deps[p] {
			t.Errorf("tether links %s: %s", p, why)
		}
	}
}

// TestEarlyInit: `tether decrypt` connects to a tang server that the JWE
// names by IPv4 address while the program is still initialising, before
// the packages that take time to initialise — the point of
// internal/earlydial. The JWE lacks its epk, so decrypt fails before it
// would dial: the connection the server sees is the early one.
func TestEarlyInit(t *testing.T) {
	bin := testenv.TetherBin(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	hdr := `{"alg":"ECDH-ES","clevis":{"pin":"tang","tang":{"url":"http://` + l.Addr().String() + `"}},"enc":"A256GCM","kid":"k"}`
	cmd := exec.Command(bin, "decrypt")
	cmd.Stdin = strings.NewReader(base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "..AAAAAAAAAAAAAAAA.Y3Q.AAAAAAAAAAAAAAAAAAAAAA")
	cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "epk") {
		t.Fatalf("decrypt of a JWE without epk: %v, stderr:\n%s", err, stderr.String())
	}
	l.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("tether decrypt did not connect during init: %v", err)
	}
	c.Close()

	// GODEBUG=inittrace=1 prints "init PACKAGE @..." as each package
	// initialises.
	order := map[string]int{}
	for i, line := range strings.Split(stderr.String(), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "init" {
			order[f[1]] = i + 1
		}
	}
	early := order["github.com/tether-nbde/tether/internal/earlydial"]
	if early == 0 {
		t.Fatalf("no init trace of internal/earlydial in:\n%s", stderr.String())
	}
	for _, p := range []string{"net", "crypto/x509", "crypto/tls", "net/http", "github.com/google/go-tpm/tpm2", "github.com/tether-nbde/tether/internal/cli"} {
		if order[p] == 0 {
			t.Errorf("no init trace of %s: this test checks nothing for it", p)
		} else if order[p] < early {
			t.Errorf("%s initialises before internal/earlydial, which then connects later than it could: keep earlydial's imports few", p)
		}
	}
}

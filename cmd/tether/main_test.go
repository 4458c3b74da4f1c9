package main

import (
	"os/exec"
	"strings"
	"testing"
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
		"golang.org/x/sys/cpu":                        "its init traps to the hypervisor a dozen times; jose/internal/p521 asks CPUID itself",
		"github.com/miekg/dns":                        "the mDNS responder's DNS library belongs in tether-server (internal/lan browses with dnsmessage)",
		"github.com/hashicorp/mdns":                   "the mDNS responder belongs in tether-server",
		"github.com/google/go-attestation/attest":     "internal/tpm/eventlog parses the event log itself (it reads SM3 banks, which attest refuses); attest is its reference in the tests only",
	} {
		if deps[p] {
			t.Errorf("tether links %s: %s", p, why)
		}
	}
}

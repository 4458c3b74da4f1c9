// Package layers checks that imports only point down the layers of
// docs/DESIGN.md. Every package of the module (but the benchmarks and the
// test harnesses, which sit on top and may import anything) has a rank;
// a package may import only packages of a lower rank. A new package
// needs a rank here, and a new upward import fails the test — unless it
// is one of the known violations below, each waiting for its fix.
package layers

import (
	"bufio"
	"bytes"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

const module = "github.com/tether-nbde/tether/"

// ranks places every package. Client: cmd → cli → boot/luks → pin/* →
// pin → tang → jose. Server: cmd → servercli → server (the wiring) →
// dashboard → admin → managed → store → policy → audit: the dashboard
// acts through the admin API, both through the managed API, and the
// domain types belong to policy (pure decisions), which the store
// persists, so store imports policy and never the reverse. Plumbing used
// by all (atomicfile, ...) is at the bottom; what one package uses lives
// under it (jose/internal/p521).
var ranks = map[string]int{
	"internal/atomicfile": 0,
	"internal/version":    0,
	"internal/testenv":    0,
	"internal/lan":        5, // finding key servers on the LAN (mDNS browse, TXT format)

	"jose/internal/p521": 5, // jose's P-521 arithmetic
	"jose":               10,
	"audit":              10,
	"internal/tpm":       10, // the TPM transport (issue 19: under pin/tpm2's care)
	// the TCG event log: read, replay, describe (tether tpm explain);
	// imports nothing of the module.
	"internal/tpm/eventlog": 5,

	"tang":   20,
	"policy": 20,

	"pin":   30, // the Pin interface and registry
	"store": 30,

	"pin/internal/remote": 35,

	"pin/https":   40,
	"pin/smb":     40,
	"pin/sss":     40,
	"pin/tang":    40,
	"pin/tpm2":    40,
	"pin/managed": 40,

	"pin/smb/share":        45,
	"internal/tpm/tpmtest": 45,
	// writes event logs and extends their digests into a swtpm
	"internal/tpm/eventlog/eventlogtest": 45,
	"store/pgtest":                       45,

	"luks": 50,
	"boot": 55,
	// doctor checks what boot installs and what luks and the pins hold.
	"internal/doctor": 58,
	// heal reseals tpm2 parts (pin/tpm2, inside pin/sss) of luks bindings
	// and sealed files.
	"internal/heal": 56,

	"server/connlimit":     56, // descriptor caps of the server's listeners
	"server/internal/wire": 56, // JSON replies and requests the server's APIs share
	"server/managed":       57, // the managed (device) API, its KEK, TLS key and webhooks
	"server/tangport":      58, // the Tang port: tang's endpoints on net/http
	"server/admin":         58, // the admin API, its credentials and client
	"server/dashboard":     59, // the web UI: sign-in, sessions, its API and page
	"server/announce":      58, // the Tang port announced on the LAN (mDNS)
	"server":               60, // Run wires the Tang port and the managed listener
	// A test harness: the whole managed listener, for the tests of its parts.
	"server/servertest": 62,

	"internal/command":    65, // the command framework of both binaries
	"internal/cli":        70,
	"internal/servercli":  70, // the server's commands, beside tether's
	"internal/docgen":     80,
	"internal/docgen/gen": 85,

	"cmd/tether":        90,
	"cmd/tether-server": 90,
	"cmd/tether-smb":    90,

	"jose/internal/p521/bench": 90, // bench/p521/run.sh: p521 against OpenSSL; a command inside jose to reach p521
}

// unranked are trees that sit above every layer.
var unranked = []string{"bench/", "test/"}

// knownViolations are today's upward imports, each to be removed by its
// fix (issue 19). The test fails when one disappears, so that the list
// shrinks with the code.
var knownViolations = map[string]string{}

func TestImportsPointDown(t *testing.T) {
	goCmd := filepath.Join(runtime.GOROOT(), "bin", "go")
	cmd := exec.Command(goCmd, "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, "./...")
	cmd.Dir = testenv.RepoRoot()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	seen := map[string]bool{}
	var bad []string
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		pkg, ok := strings.CutPrefix(f[0], module)
		if !ok || isUnranked(pkg) {
			continue
		}
		from, ok := ranks[pkg]
		if !ok {
			bad = append(bad, pkg+" has no layer: give it a rank in test/layers/layers_test.go (and docs/DESIGN.md)")
			continue
		}
		for _, imp := range f[1:] {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			to, ok := ranks[dep]
			if !ok || to < from {
				continue // an unranked package is reported on its own line
			}
			edge := pkg + " -> " + dep
			if _, known := knownViolations[edge]; known {
				seen[edge] = true
				continue
			}
			bad = append(bad, edge+": imports upward (rank "+strconv.Itoa(from)+" imports rank "+strconv.Itoa(to)+"); move the shared part down, or pass it in")
		}
	}
	for edge := range knownViolations {
		if !seen[edge] {
			bad = append(bad, edge+" is listed as a known violation but no longer happens: remove it from knownViolations")
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Error(b)
	}
}

func isUnranked(pkg string) bool {
	for _, p := range unranked {
		if strings.HasPrefix(pkg, p) {
			return true
		}
	}
	return false
}

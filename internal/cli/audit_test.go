package cli_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/tether-nbde/tether/audit"
)

// TestAuditAnchors: someone with write access to the store rewrites the
// audit log with every link recomputed, so that the chain alone checks
// out; an anchor kept from before catches it, and catches a log cut short.
func TestAuditAnchors(t *testing.T) {
	f := startManagedFixture(t)
	adminEnv := f.adminEnv
	for i := 0; i < 3; i++ {
		mustTether(t, adminEnv, "", "admin", "token", "create", "--note", fmt.Sprint("token ", i))
	}
	out := mustTether(t, adminEnv, "", "admin", "audit", "verify")
	m := regexp.MustCompile(`^ok: (\d+) records, head ([0-9a-f]{64})\n$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify: %q", out)
	}
	anchor := m[1] + ":" + m[2]
	if out := mustTether(t, adminEnv, "", "admin", "audit", "verify", "--anchor", anchor); !strings.Contains(out, "1 anchors match") {
		t.Fatalf("verify with its own head as anchor: %q", out)
	}
	// A webhook receiver's log, with lines that are not events.
	events := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(events, []byte("not json\n{\"event\":\"ping\"}\n"+
		`{"event":"unlock","seq":`+m[1]+`,"hash":"`+m[2]+`","device":"dev-x"}`+"\n"), 0o600)
	if out := mustTether(t, adminEnv, "", "admin", "audit", "verify", "--anchors-from", events); !strings.Contains(out, "1 anchors match") {
		t.Fatalf("verify --anchors-from: %q", out)
	}
	// A file with no anchor in it would check nothing: refused.
	empty := filepath.Join(t.TempDir(), "other.jsonl")
	os.WriteFile(empty, []byte("{\"event\":\"ping\"}\n"), 0o600)
	if _, e, code := tether(t, adminEnv, "", "admin", "audit", "verify", "--anchors-from", empty); code != 1 || !strings.Contains(e, "holds no audit anchor") {
		t.Fatalf("verify --anchors-from a file without anchors: exit %d\n%s", code, e)
	}
	if _, e, code := tether(t, adminEnv, "", "admin", "audit", "verify", "--anchor", "12"); code != 2 || !strings.Contains(e, "SEQ:HASH") {
		t.Fatalf("malformed anchor: exit %d\n%s", code, e)
	}
	if _, e, code := tether(t, adminEnv, "", "admin", "audit", "verify", "--anchor", "99:"+m[2]); code != 1 || !strings.Contains(e, "cut short") {
		t.Fatalf("anchor past the end: exit %d\n%s", code, e)
	}

	// Forge record 1 and recompute every link after it, behind the
	// server's back.
	f.stop()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(f.data, "tether.db"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT seq, time, device, action, source, decision, reason, actor, prev FROM audit ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var recs []*audit.Record
	for rows.Next() {
		var r audit.Record
		var ns int64
		rows.Scan(&r.Seq, &ns, &r.Device, &r.Action, &r.Source, &r.Decision, &r.Reason, &r.Actor, &r.Prev)
		r.Time = time.Unix(0, ns).UTC()
		recs = append(recs, &r)
	}
	rows.Close()
	recs[0].Reason = "forged"
	for i, r := range recs {
		if i > 0 {
			r.Prev = recs[i-1].Hash()
		}
		if _, err := db.Exec(`UPDATE audit SET reason=$1, prev=$2 WHERE seq=$3`, r.Reason, r.Prev, r.Seq); err != nil {
			t.Fatal(err)
		}
	}
	last := recs[len(recs)-1]
	if _, err := db.Exec(`UPDATE audit_head SET seq=$1, hash=$2 WHERE id=1`, last.Seq, last.Hash()); err != nil {
		t.Fatal(err)
	}
	db.Close()

	f.start(t)
	if out := mustTether(t, adminEnv, "", "admin", "audit", "verify"); !strings.HasPrefix(out, "ok: ") {
		t.Fatalf("the recomputed chain should check out on its own: %q", out)
	}
	if _, e, code := tether(t, adminEnv, "", "admin", "audit", "verify", "--anchor", anchor); code != 1 || !strings.Contains(e, "rewritten") {
		t.Fatalf("rewritten log against the anchor: exit %d\n%s", code, e)
	}
	if _, e, code := tether(t, adminEnv, "", "admin", "audit", "verify", "--anchors-from", events); code != 1 || !strings.Contains(e, "rewritten") {
		t.Fatalf("rewritten log against the webhook log: exit %d\n%s", code, e)
	}
}

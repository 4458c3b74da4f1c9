package admin_test

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/servertest"
)

// Only the admin token opens the admin API; the client refuses a server
// whose TLS key is not the pinned one.
func TestAdminTokenAndPin(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	if _, err := e.Admin.Devices(ctx); err != nil {
		t.Fatalf("the right token: %v", err)
	}
	for _, tok := range []string{"wrong", ""} {
		bad := admin.NewClient(admin.Credentials{URL: e.URL, Pin: e.M.Pin(), Token: tok})
		_, err := bad.CreateToken(ctx, admin.TokenRequest{})
		var ae *admin.Error
		if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
			t.Fatalf("token %q: %v, want 401", tok, err)
		}
	}
	// No Authorization header at all.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: servertest.InsecureTLS()}}
	resp, err := hc.Get(e.URL + "/v1/admin/devices")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", resp.StatusCode)
	}
	other := servertest.New(t, server.ManagedConfig{})
	c := admin.NewClient(admin.Credentials{URL: e.URL, Pin: other.M.Pin(), Token: "x"})
	if _, err := c.Devices(ctx); err == nil || !strings.Contains(err.Error(), "does not match the pin") {
		t.Fatalf("a server with another TLS key: %v", err)
	}
}

// Every change made with the admin token is in the audit log, with
// "admin" as the actor.
func TestAdminChangesAudited(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token("g"), "")
	if _, err := e.Admin.DeviceOp(ctx, d.ID, "disable", "lost"); err != nil {
		t.Fatal(err)
	}
	if err := e.Admin.Lockdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"token.create": false, "device.disable": false, "lockdown": false}
	err := e.Admin.Audit(ctx, func(r *audit.Record) error {
		if _, ok := want[r.Action]; ok {
			if r.Actor != "admin" || r.Decision != audit.OK {
				t.Errorf("%s audited with actor %q, decision %q", r.Action, r.Actor, r.Decision)
			}
			want[r.Action] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for a, seen := range want {
		if !seen {
			t.Errorf("no audit record of %s", a)
		}
	}
}

func TestAuditChainDetectsEdits(t *testing.T) {
	ctx := context.Background()
	e := servertest.New(t, server.ManagedConfig{})
	d := e.Enroll(e.Token(""), "")
	j := d.Encrypt(t, "s")
	e.MustUnlock(d, j, "s")
	e.Admin.DeviceOp(ctx, d.ID, "disable", "")
	e.MustFail(d, j, "disabled")
	ch, err := e.Admin.VerifyAudit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Seq < 5 {
		t.Fatalf("only %d audit records", ch.Seq)
	}
	// Edit one row behind the server's back.
	db, err := sql.Open("sqlite", e.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var orig string
	if err := db.QueryRow(`SELECT reason FROM audit WHERE seq=3`).Scan(&orig); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE audit SET reason='nothing to see' WHERE seq=3`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Admin.VerifyAudit(ctx); err == nil || !strings.Contains(err.Error(), "altered") {
		t.Fatalf("verify after editing a record: %v", err)
	}
	// Deleting a record is detected too.
	db.Exec(`UPDATE audit SET reason=$1 WHERE seq=3`, orig)
	if _, err := e.Admin.VerifyAudit(ctx); err != nil {
		t.Fatalf("after restoring the record: %v", err)
	}
	db.Exec(`DELETE FROM audit WHERE seq=2`)
	if _, err := e.Admin.VerifyAudit(ctx); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("verify after deleting a record: %v", err)
	}
}

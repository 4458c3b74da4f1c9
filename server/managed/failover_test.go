package managed_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/managed"
	_ "github.com/tether-nbde/tether/pin/sss"
	"github.com/tether-nbde/tether/server"
	"github.com/tether-nbde/tether/server/servertest"
)

// TestFailoverToStandbyServer is the Home Assistant standby case: one
// device enrolled with two independent managed servers (a state directory
// each) and a secret bound with sss t=1 over both. With the primary gone
// the standby unlocks; revoking the device on both makes it unrecoverable.
func TestFailoverToStandbyServer(t *testing.T) {
	primary := servertest.New(t, server.ManagedConfig{})
	standby := servertest.New(t, server.ManagedConfig{})
	a := primary.Enroll(primary.Token(""), "")
	b := standby.Enroll(standby.Token(""), "")
	cfg, _ := json.Marshal(map[string]any{"t": 1, "pins": map[string]any{
		"managed": []any{map[string]string{"state": a.Dir}, map[string]string{"state": b.Dir}},
	}})
	ctx := context.Background()
	j, err := pin.Encrypt(ctx, "sss", cfg, []byte("ha secret"), pin.Options{})
	if err != nil {
		t.Fatal(err)
	}
	j, _ = jose.ParseCompact(j.Compact())
	decrypt := func() (string, error) {
		out, err := pin.Decrypt(ctx, j, pin.Options{})
		return string(out), err
	}
	if got, err := decrypt(); err != nil || got != "ha secret" {
		t.Fatalf("both up: %q %v", got, err)
	}
	primary.Stop()
	if got, err := decrypt(); err != nil || got != "ha secret" {
		t.Fatalf("primary down, standby up: %q %v", got, err)
	}
	if _, err := standby.Admin.DeviceOp(ctx, b.ID, "revoke", "stolen"); err != nil {
		t.Fatal(err)
	}
	if _, err := decrypt(); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("primary down, standby revoked: %v", err)
	}
}

package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// The admin credentials (DATA/admin.json) are the one way into a managed
// server's administration. Whatever fails, they must exist: written before
// the store records the token on first start (InitToken), and
// reissued offline by root with "tether admin reset-credentials" when the
// file is lost.

// WriteCredentials writes admin credentials to path, 0600, atomically.
func WriteCredentials(path string, c Credentials) error {
	b, _ := json.MarshalIndent(c, "", "  ")
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// CredentialsModeWarning returns a warning if the admin credentials file
// at path can be read by anyone but its owner, and "" otherwise. A reader
// warns rather than refuses: the token may already have leaked, and
// refusing would only keep the administrator from rotating it.
func CredentialsModeWarning(path string) string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return ""
	}
	return fmt.Sprintf("%s holds the admin token and is readable by others (mode %04o): run chmod 600 %s, and if others could log in here, reissue the token with tether admin reset-credentials",
		path, fi.Mode().Perm(), path)
}

// ResetCredentials replaces the admin token in the store by a new
// one, which it writes with url and the stored pin to file first (so a
// failure leaves the old token valid, or the new one written), and audits
// the change. The old token stops working at once, on every replica.
func ResetCredentials(ctx context.Context, st store.Store, url, file string) (Credentials, error) {
	pin, err := managed.StoredPin(ctx, st)
	if err != nil {
		return Credentials{}, err
	}
	c := Credentials{URL: url, Pin: pin, Token: wire.RandomToken(32)}
	if err := WriteCredentials(file, c); err != nil {
		return Credentials{}, fmt.Errorf("write admin credentials: %w", err)
	}
	h := sha256.Sum256([]byte(c.Token))
	if err := st.SetSetting(ctx, tokenSetting, hex.EncodeToString(h[:])); err != nil {
		return Credentials{}, fmt.Errorf("store the new admin token: %w (%s holds a token the store does not know; run this again)", err, file)
	}
	err = st.AppendAudit(ctx, &audit.Record{Action: "admin.reset-credentials", Actor: "root", Decision: audit.OK,
		Reason: "admin token reissued offline; the old one no longer works"})
	if err != nil {
		return c, fmt.Errorf("the new admin token works, but the audit record of the change failed: %w", err)
	}
	return c, nil
}

// Credentials is what "tether admin" needs to reach the admin API: written
// 0600 to DATA/admin.json on first start.
type Credentials struct {
	URL   string `json:"url"`
	Pin   string `json:"pin"`
	Token string `json:"token"`
}

// tokenSetting holds the SHA-256 (hex) of the admin API's token.
const tokenSetting = "admin.token.sha256"

// InitToken creates the admin token if the store has none. It
// returns the new token, or "" if one existed (or another replica made it
// first, in which case what save received is void).
func InitToken(ctx context.Context, st store.Store, save func(string) error) (string, error) {
	if _, err := st.Setting(ctx, tokenSetting); err == nil {
		return "", nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	tok := wire.RandomToken(32)
	if save != nil {
		if err := save(tok); err != nil {
			return "", err
		}
	}
	h := sha256.Sum256([]byte(tok))
	stored, err := st.InitSetting(ctx, tokenSetting, hex.EncodeToString(h[:]))
	if err != nil {
		return "", err
	}
	if stored != hex.EncodeToString(h[:]) {
		return "", nil
	}
	return tok, nil
}

// constantTimeEqualHex compares a presented secret's hash with a stored
// hex hash.
func constantTimeEqualHex(secret, storedHex string) bool {
	h := sha256.Sum256([]byte(secret))
	want, err := hex.DecodeString(storedHex)
	return err == nil && subtle.ConstantTimeCompare(h[:], want) == 1
}

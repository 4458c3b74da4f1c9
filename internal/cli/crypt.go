package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/term"

	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/https"   // registers the https pin
	_ "github.com/tether-nbde/tether/pin/managed" // registers the managed pin
	_ "github.com/tether-nbde/tether/pin/smb"     // registers the smb pin
	_ "github.com/tether-nbde/tether/pin/sss"     // registers the sss pin
	_ "github.com/tether-nbde/tether/pin/tang"    // registers the tang pin
	"github.com/tether-nbde/tether/pin/tpm2"      // registers the tpm2 pin
)

// maxInput bounds what encrypt and decrypt read from stdin: pins protect
// small secrets (passphrases, keys), and a JWE of one is a few KiB.
const maxInput = 16 << 20

const encryptUsage = `Usage: tether encrypt PIN CONFIG [-y] [--timeout D] [--pin-file F] < SECRET > JWE

Encrypt SECRET (stdin) under the policy of PIN and write a compact JWE to
stdout. The JWE is in Clevis's format: "clevis decrypt" and "tether
decrypt" both read it, and tether decrypts JWEs made by clevis.

Pins:
  tang   the key is recovered with the help of a Tang server (tangd or
         tether server). CONFIG: {"url":URL, "thp":THUMBPRINT}
           url  the server's base URL (required)
           thp  thumbprint of a trusted signing key: "tether adv URL"
                prints it, to compare with "tether server keys list"
                or tang-show-keys on the server
           adv  a trusted advertisement: a file name or the JWS object;
                no network access is needed to encrypt then
  sss    Shamir's secret sharing: any t of the child pins decrypt.
         CONFIG: {"t":2,"pins":{"tang":[{"url":..},{"url":..}],...}}
         Children decrypt in parallel, each with its own timeout.
  tpm2   sealed to this machine's TPM, optionally to PCR values, so a
         pulled disk or a changed boot chain gets nothing.
         CONFIG: {"pcr_bank":"sha256","pcr_ids":"0,7"} (both optional;
         the bank defaults to sha256; {} seals without PCR policy).
         "pcr_digest": base64url of the PCRs' values after an update
         (what tpm2_pcrread -o writes) seals to that state instead of
         the current one, as clevis does.
         The TPM is /dev/tpmrm0 unless TETHER_TPM_TCTI or TPM2TOOLS_TCTI
         names another (e.g. swtpm:host=127.0.0.1,port=2321); see
         docs/TPM2.md. "with_pin":true also needs a PIN to decrypt
         (asked twice on the terminal now, or read from --pin-file);
         wrong PINs count against the TPM's lockout. clevis cannot
         decrypt such a JWE. "pcr_pubkey":FILE.pem with
         "pcr_signed_ids":"11" allows any values of those PCRs that the
         key signed (tether tpm sign-pcrs), so updates need a signature,
         not a reseal (tether only). "pcr_signer":"managed" instead of
         "pcr_pubkey": the managed server this machine is enrolled with
         signs the values it approves, asked at every decryption
         (tether admin pcr approve; a revoked device gets none).
  managed  the key is recovered from a tether server in managed mode,
         with this machine's own key there, under the server's policy
         (approval, networks, keep-alive, revocation); enrol first with
         tether enroll. CONFIG: {} or {"state":DIR} (the enrolment's
         state directory; default $TETHER_DEVICE_DIR, else
         /etc/tether/device). See docs/MANAGED.md.
  https  the key is derived from material fetched from an HTTPS URL.
         CONFIG: {"url":URL, "pin_sha256":PIN | "ca_file":FILE,
                  "cert_file":FILE, "key_file":FILE, "token_file":FILE}
  smb    the key is derived from a key file on an SMB2/3 share, read
         through the tether-smb helper (installed next to tether).
         CONFIG: {"server":HOST, "share":NAME, "path":FILE, "user":USER,
                  "password_file":FILE}
         The password, token or client key of https and smb must be
         protected by another pin you have:
           "protect":{"pin":"tang","config":{"url":URL}}  (or tpm2, sss,
         managed); a thief with the disk then cannot read it. Stored in
         the clear it is refused unless "allow_plain_credentials":true
         (docs/REMOTE-PINS.md says what a thief can do in each case).

Trust: without "thp" or "adv", tether fetches the advertisement, shows the
thumbprints of its signing keys and refuses; -y trusts the advertisement
blindly (only on a network you trust).

Options:
  -y             trust advertisements without a thumbprint
  --timeout D    bound for each network exchange (default 10s)
  --pin-file F   read the PIN of a "with_pin" tpm2 pin from F (its first
                 line; /dev/fd/N for a pipe) instead of the terminal

Examples:
  $ tether encrypt tang '{"url":"http://keys.lan:7500","thp":"9C8h..."}' < secret > secret.jwe
  $ tether encrypt sss '{"t":2,"pins":{"tang":[{"url":"http://a"},{"url":"http://b"},{"url":"http://c"}]}}' -y < secret > secret.jwe
  $ tether encrypt managed '{}' < secret > secret.jwe
  $ tether encrypt smb '{"server":"nas","share":"keys","path":"ha.key","user":"pi","password_file":"/root/nas.pw","protect":{"pin":"tang","config":{"url":"http://keys.lan:7500","thp":"9C8h..."}}}' < secret > secret.jwe
`

func encryptCmd() *command.Command {
	return &command.Command{
		Name:    "encrypt",
		Summary: "encrypt stdin to a JWE under a pin's policy",
		Usage:   encryptUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			trust := fs.Bool("y", false, "")
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 2 {
					return command.Usagef("want PIN and CONFIG")
				}
				cfg := json.RawMessage(args[1])
				if !json.Valid(cfg) {
					return command.WithHint(fmt.Errorf("configuration is not valid JSON: %s", args[1]),
						`quote it for the shell: '{"url":"http://keys.lan"}'`)
				}
				secret, err := readInput(env.Stdin, "tether encrypt ... < secret > secret.jwe")
				if err != nil {
					return err
				}
				defer clear(secret)
				ctx := context.Background()
				j, err := pin.Encrypt(ctx, args[0], cfg, secret, pin.Options{Trust: *trust, Timeout: *timeout, Warn: env.Stderr,
					PIN: pinAsker(env, *pinFile)})
				if err != nil {
					return plainCredentialsHint(err, "tether encrypt", args[0], cfg)
				}
				_, err = io.WriteString(env.Stdout, j.Compact())
				return err
			}
		},
	}
}

const decryptUsage = `Usage: tether decrypt [--timeout D] [--pin-file F] < JWE > SECRET

Decrypt a JWE made by tether encrypt or clevis encrypt. The JWE says which
pin made it and where its servers are; no configuration is needed. For sss,
every child is tried at once and decryption finishes as soon as enough have
answered: a dead or silent server costs at most --timeout, and nothing when
enough others answer.

A tpm2 JWE sealed "with_pin" needs its PIN: tether asks on the terminal
(/dev/tty; stdin carries the JWE), or reads --pin-file. The TPM counts
wrong PINs and, after a few (tpm2_getcap properties-variable:
TPM2_PT_MAX_AUTH_FAIL), refuses all PINs for a while; the error says how
long.

Options:
  --timeout D    bound for each network exchange (default 10s)
  --pin-file F   read the PIN from F (its first line; /dev/fd/N for a
                 pipe) instead of the terminal

Examples:
  $ tether decrypt < secret.jwe > secret
  $ tether decrypt --pin-file /dev/fd/3 < secret.jwe 3< <(systemd-ask-password "TPM PIN:") > secret
`

func decryptCmd() *command.Command {
	return &command.Command{
		Name:    "decrypt",
		Summary: "decrypt a JWE from stdin (made by tether or clevis)",
		Usage:   decryptUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			timeout := fs.Duration("timeout", pin.DefaultTimeout, "")
			pinFile := fs.String("pin-file", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("decrypt takes no arguments: the JWE comes on stdin")
				}
				in, err := readInput(env.Stdin, "tether decrypt < secret.jwe > secret")
				if err != nil {
					return err
				}
				j, err := jose.ParseCompact(string(in))
				if err != nil {
					return command.WithHint(err, "give decrypt a compact JWE as written by tether encrypt or clevis encrypt")
				}
				o := pin.Options{Timeout: *timeout, PIN: pinAsker(env, *pinFile)}
				if err := askFirst(o, j); err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(context.Background(), *timeout+time.Second)
				defer cancel()
				secret, err := pin.Decrypt(ctx, j, o)
				if err != nil {
					return err
				}
				defer clear(secret)
				_, err = env.Stdout.Write(secret)
				return err
			}
		},
	}
}

// askFirst asks for the PIN a JWE needs before decryption starts, so
// that the time a person takes to type it does not count against the
// deadline of the network pins beside it.
func askFirst(o pin.Options, jwes ...*jose.JWE) error {
	for _, j := range jwes {
		if tpm2.NeedsPIN(j) {
			p, err := o.PIN("PIN of the TPM-sealed secret", false)
			clear(p)
			return err
		}
	}
	return nil
}

// readInput reads stdin, which must not be a terminal (the command would
// sit waiting for typed input); example is the command line with the
// input piped in, for the hint. /dev/null is a character device but
// no terminal: it is empty input.
func readInput(r io.Reader, example string) ([]byte, error) {
	if f, ok := r.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return nil, command.WithHint(fmt.Errorf("stdin is a terminal"), "pipe the input in: %s", example)
	}
	return checkInput(io.ReadAll(io.LimitReader(r, maxInput+1)))
}

// checkInput passes on what readInput read, up to maxInput+1 bytes.
func checkInput(data []byte, err error) ([]byte, error) {
	if err != nil {
		return nil, fmt.Errorf("read stdin: %w", err)
	}
	if len(data) > maxInput {
		return nil, fmt.Errorf("input is larger than %d MiB", maxInput>>20)
	}
	return data, nil
}

// plainCredentialsHint gives a refusal to store remote-pin credentials in
// the clear a hint: the same command with the credentials protected by a
// Tang server, or the opt-in. cmd is the command up to the pin name
// ("tether luks bind -d /dev/sdb"); other errors pass through.
func plainCredentialsHint(err error, cmd, name string, cfg json.RawMessage) error {
	var pe *pin.PlainCredentialsError
	if !errors.As(err, &pe) {
		return err
	}
	var m map[string]json.RawMessage
	if name != pe.Pin || json.Unmarshal(cfg, &m) != nil {
		// Nested (an sss child): the fix goes inside, where we cannot point.
		return command.WithHint(err, `add "protect":{"pin":"tang","config":{"url":"http://YOUR-TANG-SERVER"}} to the %s configuration inside %s, and run the command again (docs/REMOTE-PINS.md)`, pe.Pin, name)
	}
	m["protect"] = json.RawMessage(`{"pin":"tang","config":{"url":"http://YOUR-TANG-SERVER"}}`)
	fixed, _ := json.Marshal(m)
	delete(m, "protect")
	m["allow_plain_credentials"] = json.RawMessage("true")
	plain, _ := json.Marshal(m)
	if bytes.ContainsRune(fixed, '\'') {
		return command.WithHint(err, `add "protect":{"pin":"tang","config":{"url":"http://YOUR-TANG-SERVER"}} to the configuration and run the command again (docs/REMOTE-PINS.md)`)
	}
	return command.WithHint(err, "protect it with your Tang server (or a tpm2, sss or managed pin; docs/REMOTE-PINS.md):\n"+
		"  %s %s '%s'\nor store it in the clear knowingly:\n  %s %s '%s'", cmd, name, fixed, cmd, name, plain)
}

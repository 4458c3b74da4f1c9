package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/internal/command"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
)

const tpmSignUsage = `Usage: tether tpm sign-pcrs --key KEY.pem --pcr-ids IDS [--bank B] [--pcr-digest VALUES] [--out FILE]

Sign values of PCRs IDS with the policy key KEY.pem, allowing every tpm2
secret sealed to that key ("pcr_pubkey") to unseal while those PCRs hold
those values — after a kernel or firmware update, sign the new values
instead of resealing each secret. The values are this TPM's current ones,
or VALUES: base64url of the values concatenated in index order, as
"pcr_digest" and tpm2_pcrread -o take them (to sign a state ahead of the
update, or on another machine than the one that boots it).

The output is a signature file (JSON, type tether-pcr-signatures-v1: bank,
pcr_ids, the approved policy digest, the key's SHA-256, the ECDSA
signature). With --out FILE the signature is added to FILE (replacing one
by the same key for the same values), atomically, mode 0644: it holds
nothing secret. Without --out it goes to stdout.

Keep KEY.pem off the machines it signs for, except while signing (bring
it on a USB stick, or sign elsewhere with --pcr-digest): a machine holding
it can allow any state to itself. Old signatures stay valid: a state once signed unseals
for as long as its signature can be presented, whatever the file says
later; to withdraw one, reseal the secrets (tether luks regen, or encrypt
again) with a new key.

Options:
  --key KEY.pem      ECDSA P-256 private key, PEM (make one with:
                     openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out KEY.pem;
                     its public half, for "pcr_pubkey":
                     openssl pkey -in KEY.pem -pubout -out KEY.pub.pem),
                     or that file sealed by another pin, a JWE made with
                     tether encrypt PIN CONFIG < KEY.pem > KEY.pem.jwe (e.g.
                     sss of the owner's tang servers): decrypted in memory
                     for this signature only
  --pcr-ids IDS      the PCRs the policy signs ("pcr_signed_ids"), e.g. 11
  --bank B           PCR bank (default sha256)
  --pcr-digest V     the values to sign (default: read from this TPM)
  --out FILE         add to this signature file (the secrets' "pcr_signatures",
                     default /etc/tether/pcr-signatures.json)

Examples:
  # tether encrypt tpm2 '{"pcr_ids":"7","pcr_pubkey":"/etc/tether/pcr-policy.pub.pem","pcr_signed_ids":"11"}' < s > s.jwe
  # tether tpm sign-pcrs --key /root/pcr-policy.pem --pcr-ids 11 --out /etc/tether/pcr-signatures.json
`

func tpmSignPCRsCmd() *command.Command {
	return &command.Command{
		Name:    "tpm sign-pcrs",
		Summary: "sign PCR values for tpm2 secrets sealed to a policy key (pcr_pubkey)",
		Usage:   tpmSignUsage,
		Flags: func(fs *flag.FlagSet) func(*Env, []string) error {
			keyFile := fs.String("key", "", "")
			ids := fs.String("pcr-ids", "", "")
			bank := fs.String("bank", "sha256", "")
			digest := fs.String("pcr-digest", "", "")
			out := fs.String("out", "", "")
			return func(env *Env, args []string) error {
				if len(args) != 0 {
					return command.Usagef("sign-pcrs takes no arguments")
				}
				if *keyFile == "" || *ids == "" {
					return command.Usagef("want --key KEY.pem and --pcr-ids IDS")
				}
				pcrs, err := tpm.ParsePCRs(*ids)
				if err != nil || len(pcrs) == 0 {
					return command.Usagef("--pcr-ids %q: want PCR indexes such as 7,11", *ids)
				}
				if _, err := tpm.HashAlg(*bank); err != nil {
					return command.Usagef("--bank: %v", err)
				}
				key, err := readSigningKey(env, *keyFile)
				if err != nil {
					return err
				}
				var vals [][]byte
				if *digest != "" {
					raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(*digest), "="))
					if err != nil {
						if raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(strings.TrimSpace(*digest), "=")); err != nil {
							return command.Usagef("--pcr-digest is not base64url")
						}
					}
					if vals, err = tpm.SplitPCRValues(*bank, pcrs, raw); err != nil {
						return command.Usagef("--pcr-digest: %v", err)
					}
				} else {
					t, err := tpm.Open(context.Background(), "")
					if err != nil {
						return command.WithHint(err, "sign values computed elsewhere with --pcr-digest")
					}
					vals, err = t.ReadPCRs(*bank, pcrs)
					t.Close()
					if err != nil {
						return err
					}
				}
				// The approved policy is the PolicyPCR digest in a sha256
				// session: signed policies need "hash":"sha256".
				policy, err := tpm.PolicyPCRDigest("sha256", *bank, pcrs, vals)
				if err != nil {
					return err
				}
				sig, err := tpm.SignPolicy(key, policy)
				if err != nil {
					return err
				}
				s := tpm.PCRSignature{Bank: *bank, PCRs: pcrs, Policy: policy, KeyID: tpm.PolicyKey{PublicKey: &key.PublicKey}.ID(), Sig: sig}
				sigs := []tpm.PCRSignature{s}
				if *out != "" {
					old, err := os.ReadFile(*out)
					switch {
					case errors.Is(err, os.ErrNotExist):
					case err != nil:
						return fmt.Errorf("read %s: %w", *out, err)
					default:
						prev, err := tpm.ParseSignatures(old)
						if err != nil {
							return command.WithHint(fmt.Errorf("%s: %w", *out, err), "move it away, or give another --out")
						}
						sigs = tpm.AddSignature(prev, s)
					}
				}
				data, err := tpm.MarshalSignatures(sigs)
				if err != nil {
					return err
				}
				if *out == "" {
					_, err = env.Stdout.Write(data)
					return err
				}
				// Signatures are public: readable by all, like the JWEs'
				// headers that name the key.
				if err := atomicfile.Write(*out, data, 0o644); err != nil {
					return fmt.Errorf("write %s: %w", *out, err)
				}
				fmt.Fprintf(env.Stderr, "tether: %s now allows %s PCRs %s = policy %x (key %x…; %d signature(s) in the file)\n",
					*out, *bank, tpm.FormatPCRs(pcrs), policy, s.KeyID[:8], len(sigs))
				return nil
			}
		},
	}
}

// readSigningKey reads an ECDSA P-256 private key from a PEM file
// (PKCS#8, as openssl genpkey writes it, or SEC1).
func readSigningKey(env *Env, name string) (*ecdsa.PrivateKey, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("read the policy signing key: %w", err)
	}
	defer clear(data)
	if j, err := jose.ParseCompact(strings.TrimSpace(string(data))); err == nil {
		// The key sealed by another pin (tether encrypt ... < KEY.pem):
		// in the clear only in memory, for this signature.
		o := pin.Options{Timeout: pin.DefaultTimeout, PIN: pinAsker(env, "")}
		ctx, cancel := context.WithTimeout(context.Background(), pin.DefaultTimeout+time.Second)
		defer cancel()
		plain, err := pin.Decrypt(ctx, j, o)
		if err != nil {
			return nil, fmt.Errorf("decrypt the policy signing key %s (%s): %w", name, pin.Describe(j), err)
		}
		clear(data)
		data = plain
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s is not a PEM private key", name)
	}
	var k any
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("%s holds a %q, want an EC private key", name, b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve.Params().Name != "P-256" {
		return nil, command.WithHint(fmt.Errorf("%s is not an ECDSA P-256 key", name),
			"make one with: openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out %s", name)
	}
	return ek, nil
}

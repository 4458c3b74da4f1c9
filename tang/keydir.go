package tang

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/jose"
)

// A key directory holds one private JWK per "*.jwk" file, in tangd's format,
// so that tangd and tether can serve the same directory and a tangd
// directory can be imported by copying. A file whose name starts with "."
// holds a rotated ("hidden") key: never advertised, still used for /rec and
// for /adv/{kid}.

// Key is one private key of a key directory.
type Key struct {
	JWK    *jose.JWK
	File   string // base name in the directory
	Hidden bool

	curve  *jose.Curve
	scalar []byte // the private scalar, validated once at load
}

// Signing reports whether the key signs advertisements.
func (k *Key) Signing() bool { return k.JWK.HasOp("sign") }

// Exchange reports whether the key answers recovery requests.
func (k *Key) Exchange() bool { return k.JWK.HasOp("deriveKey") }

// LoadKeyDir reads every *.jwk file of dir. Files that are not private EC
// keys with sign or deriveKey in key_ops are an error: a server that
// silently skipped a key would break the bindings made with it.
func LoadKeyDir(dir string) ([]*Key, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read key directory: %w", err)
	}
	var keys []*Key
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".jwk") {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("read key %s: %w", name, err)
		}
		k, err := jose.ParseJWK(data)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", name, err)
		}
		key := &Key{JWK: k, File: name, Hidden: strings.HasPrefix(name, ".")}
		if k.Kty != "EC" || k.D == "" {
			return nil, fmt.Errorf("key %s: not a private EC key", name)
		}
		c, _ := jose.CurveByName(k.Crv)
		if key.scalar, err = c.Scalar(k); err != nil {
			return nil, fmt.Errorf("key %s: %w", name, err)
		}
		key.curve = c
		if _, err := c.Point(k); err != nil {
			return nil, fmt.Errorf("key %s: %w", name, err)
		}
		if !key.Signing() && !key.Exchange() {
			return nil, fmt.Errorf("key %s: key_ops has neither sign nor deriveKey", name)
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// GenerateKeys writes a new signing and exchange key pair on curve c to dir
// and returns them. Files are written atomically with mode 0400.
func GenerateKeys(dir string, c *jose.Curve) ([]*Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	sig, err := c.GenerateKey(c.Alg, "sign", "verify")
	if err != nil {
		return nil, err
	}
	exc, err := c.GenerateKey("ECMR", "deriveKey")
	if err != nil {
		return nil, err
	}
	var out []*Key
	for _, k := range []*jose.JWK{sig, exc} {
		key, err := writeKey(dir, k, false)
		if err != nil {
			return nil, err
		}
		out = append(out, key)
	}
	return out, nil
}

// writeKey writes k under its S256 thumbprint (hidden with a "." prefix),
// as tangd-keygen names its files.
func writeKey(dir string, k *jose.JWK, hidden bool) (*Key, error) {
	tp, err := k.Thumbprint("S256")
	if err != nil {
		return nil, err
	}
	name := tp + ".jwk"
	if hidden {
		name = "." + name
	}
	data, err := json.Marshal(k)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, name), data, 0o400); err != nil {
		return nil, fmt.Errorf("write key %s: %w", name, err)
	}
	return &Key{JWK: k, File: name, Hidden: hidden}, nil
}

// Rotate generates a new key pair and then hides every key that was visible,
// so new bindings use the new pair while old ones keep working. The new
// keys are on disk before any old key is hidden: an interruption leaves
// more keys advertised, never none.
func Rotate(dir string, c *jose.Curve) (newKeys []*Key, hidden []*Key, err error) {
	old, err := LoadKeyDir(dir)
	if err != nil {
		return nil, nil, err
	}
	newKeys, err = GenerateKeys(dir, c)
	if err != nil {
		return nil, nil, err
	}
	for _, k := range old {
		if k.Hidden {
			continue
		}
		if err := os.Rename(filepath.Join(dir, k.File), filepath.Join(dir, "."+k.File)); err != nil {
			return newKeys, hidden, fmt.Errorf("hide key %s: %w", k.File, err)
		}
		hidden = append(hidden, k)
	}
	return newKeys, hidden, syncDir(dir)
}

// Import copies every key of a tangd key directory into dir, keeping each
// key's hidden state, so every binding made against that tangd keeps
// working. Keys already present are skipped. It validates all keys before
// writing any.
func Import(dir, tangDir string) (imported []*Key, err error) {
	src, err := LoadKeyDir(tangDir)
	if err != nil {
		return nil, err
	}
	if len(src) == 0 {
		return nil, fmt.Errorf("import: no *.jwk keys in %s", tangDir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	have, err := LoadKeyDir(dir)
	if err != nil {
		return nil, err
	}
	for _, k := range src {
		if slices.ContainsFunc(have, func(h *Key) bool { return h.JWK.X == k.JWK.X && h.JWK.Crv == k.JWK.Crv }) {
			continue
		}
		key, err := writeKey(dir, k.JWK, k.Hidden)
		if err != nil {
			return imported, err
		}
		imported = append(imported, key)
	}
	return imported, nil
}

// EnsureKeys generates a key pair if dir has no visible signing or no visible
// exchange key (as tangd does on first request), and returns all keys.
func EnsureKeys(dir string, c *jose.Curve) ([]*Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create key directory: %w", err)
	}
	keys, err := LoadKeyDir(dir)
	if err != nil {
		return nil, err
	}
	var sig, exc bool
	for _, k := range keys {
		sig = sig || (!k.Hidden && k.Signing())
		exc = exc || (!k.Hidden && k.Exchange())
	}
	if sig && exc {
		return keys, nil
	}
	if _, err := GenerateKeys(dir, c); err != nil {
		return nil, err
	}
	return LoadKeyDir(dir)
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

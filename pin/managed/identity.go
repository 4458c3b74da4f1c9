package managed

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
)

// KeyStore makes and loads a device's identity key. The identity key never
// leaves the device: the server only learns its public half at enrolment
// and then recognises the device by it in every TLS handshake.
//
// "file" (a 0600 PKCS #8 file in the state directory) is built in. A
// TPM-resident key store (ECC P-256, fixedTPM, non-exportable; see
// internal/tpm) registers itself as "tpm" with RegisterKeyStore; the state
// file records which one made the key, so loading needs no flag.
type KeyStore interface {
	// Create makes a new identity key and keeps whatever it needs to load
	// it again in dir.
	Create(dir string) (crypto.Signer, error)
	// Load returns the identity key Create made in dir.
	Load(dir string) (crypto.Signer, error)
}

var (
	ksMu      sync.RWMutex
	keyStores = map[string]KeyStore{"file": FileKeyStore{}}
)

// RegisterKeyStore makes a key store available by name.
func RegisterKeyStore(name string, ks KeyStore) {
	ksMu.Lock()
	defer ksMu.Unlock()
	keyStores[name] = ks
}

func keyStore(name string) (KeyStore, error) {
	ksMu.RLock()
	defer ksMu.RUnlock()
	if name == "" {
		name = "file"
	}
	ks, ok := keyStores[name]
	if !ok {
		return nil, fmt.Errorf("identity key store %q is not available in this build", name)
	}
	return ks, nil
}

// FileKeyStore keeps an ECDSA P-256 identity key in DIR/identity.key,
// readable by root only.
type FileKeyStore struct{}

const identityFile = "identity.key"

func (FileKeyStore) Create(dir string) (crypto.Signer, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	defer clear(der)
	if err := atomicfile.Write(filepath.Join(dir, identityFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("write identity key: %w", err)
	}
	return k, nil
}

func (FileKeyStore) Load(dir string) (crypto.Signer, error) {
	p := filepath.Join(dir, identityFile)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s is not a PEM private key", p)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", p)
	}
	return s, nil
}

// State is what enrolment leaves in the state directory (device.json).
type State struct {
	Server   string `json:"server"`    // managed API base URL, https://host:port
	Pin      string `json:"pin"`       // server TLS key pin (base64url SHA-256 of SPKI)
	Device   string `json:"device"`    // device ID the server gave
	KeyStore string `json:"key_store"` // "file", "tpm", ...
	Name     string `json:"name,omitempty"`
}

const stateFile = "device.json"

// DefaultDir is where the device's identity and enrolment live unless
// TETHER_DEVICE_DIR or an explicit directory says otherwise.
const DefaultDir = "/etc/tether/device"

// Identity is an enrolled (or enrolling) device: its state and key.
type Identity struct {
	Dir    string
	State  State
	Signer crypto.Signer
}

// LoadIdentity reads an enrolled device's state and identity key.
func LoadIdentity(dir string) (*Identity, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("this machine is not enrolled (no %s in %s): run tether enroll first", stateFile, dir)
	}
	if err != nil {
		return nil, err
	}
	var st State
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, stateFile), err)
	}
	ks, err := keyStore(st.KeyStore)
	if err != nil {
		return nil, err
	}
	s, err := ks.Load(dir)
	if err != nil {
		return nil, err
	}
	return &Identity{Dir: dir, State: st, Signer: s}, nil
}

// Save writes the state file.
func (id *Identity) Save() error {
	b, _ := json.MarshalIndent(id.State, "", "  ")
	return atomicfile.Write(filepath.Join(id.Dir, stateFile), append(b, '\n'), 0o600)
}

// certificate wraps the identity key in a self-signed certificate for the
// TLS handshake. The server ignores everything but the public key; the
// handshake's CertificateVerify proves the device holds the private key.
func (id *Identity) certificate() (tls.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "tether device " + id.State.Device},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.Signer.Public(), id.Signer)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("make client certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: id.Signer}, nil
}

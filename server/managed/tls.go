package managed

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/store"
)

// SPKIPin returns the pin of a public key: base64url (no padding) of the
// SHA-256 of its DER SubjectPublicKeyInfo. Devices pin the server's TLS
// key by it, and the server names device identity keys by it (KeyID).
func SPKIPin(spki []byte) string {
	h := sha256.Sum256(spki)
	return jose.B64.EncodeToString(h[:])
}

// storedTLS is the managed API's certificate and KEK-wrapped key, kept in
// the store (one setting, so replicas can never pair one's certificate
// with another's key) so that every replica presents the same certificate
// and enrolled devices can fail over between them.
type storedTLS struct {
	Cert string `json:"cert"` // PEM
	Key  string `json:"key"`  // base64 of KEK-wrapped PKCS #8 DER
}

// loadOrCreateTLS returns the managed API's certificate, generating a
// self-signed ECDSA P-256 one on first start. Its lifetime is long (100
// years) on purpose: devices pin the key, not a CA chain or a date, so
// expiry would only break enrolled devices.
func loadOrCreateTLS(ctx context.Context, st store.Store, kek *KEK, hostnames []string) (tls.Certificate, error) {
	var none tls.Certificate
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return none, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "tether managed key server"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(100, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, h := range hostnames {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return none, err
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return none, err
	}
	wrapped, err := kek.Wrap("managed-tls-key", p8)
	clear(p8)
	if err != nil {
		return none, err
	}
	fresh, _ := json.Marshal(storedTLS{
		Cert: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		Key:  base64.StdEncoding.EncodeToString(wrapped),
	})
	val, err := st.InitSetting(ctx, "managed.tls", string(fresh))
	if err != nil {
		return none, fmt.Errorf("store TLS certificate: %w", err)
	}
	var s storedTLS
	if err := json.Unmarshal([]byte(val), &s); err != nil {
		return none, fmt.Errorf("stored TLS certificate: %w", err)
	}
	blk, _ := pem.Decode([]byte(s.Cert))
	w, err := base64.StdEncoding.DecodeString(s.Key)
	if blk == nil || err != nil {
		return none, fmt.Errorf("stored TLS certificate is malformed")
	}
	p8, err = kek.Unwrap("managed-tls-key", w)
	if err != nil {
		return none, err
	}
	priv, err := x509.ParsePKCS8PrivateKey(p8)
	clear(p8)
	if err != nil {
		return none, err
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return none, err
	}
	return tls.Certificate{Certificate: [][]byte{blk.Bytes}, PrivateKey: priv, Leaf: leaf}, nil
}

// StoredPin returns the pin of the managed API's TLS key as the store
// holds it (the certificate is public; no key-encryption key is needed).
func StoredPin(ctx context.Context, st store.Store) (string, error) {
	v, err := st.Setting(ctx, "managed.tls")
	if errors.Is(err, store.ErrNotFound) {
		return "", errors.New("the store holds no managed TLS certificate: the server has never started in managed mode with it")
	}
	if err != nil {
		return "", err
	}
	var s storedTLS
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return "", fmt.Errorf("stored TLS certificate: %w", err)
	}
	blk, _ := pem.Decode([]byte(s.Cert))
	if blk == nil {
		return "", errors.New("stored TLS certificate is malformed")
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return "", fmt.Errorf("stored TLS certificate: %w", err)
	}
	return SPKIPin(cert.RawSubjectPublicKeyInfo), nil
}

package managed

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-nbde/tether/internal/atomicfile"
)

// ZFSFiles are what ZFS (libcurl) needs to fetch dataset keys from the
// managed server: the device's identity as a client certificate and key,
// and the server's certificate to trust.
type ZFSFiles struct {
	ClientCert string // PEM certificate of the identity key (SSL_CLIENT_CERT_FILE)
	ClientKey  string // the identity key (SSL_CLIENT_KEY_FILE)
	ServerCert string // the server's certificate, checked against the pin (SSL_CA_CERT_FILE)
	BaseURL    string // https://host:port/v1/zfs/
}

// WriteZFSFiles prepares an enrolled device for ZFS keylocation=https://.
// libcurl reads the key from a file, so this needs the "file" key store: a
// TPM-resident key cannot be handed to libcurl.
func WriteZFSFiles(ctx context.Context, dir string) (*ZFSFiles, error) {
	id, err := LoadIdentity(dir)
	if err != nil {
		return nil, err
	}
	if ks := id.State.KeyStore; ks != "" && ks != "file" {
		return nil, fmt.Errorf("the identity key is in the %s key store, which libcurl (and so ZFS) cannot use: "+
			"enrol with --key-store file for ZFS key fetching", ks)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "tether device " + id.State.Device},
		NotBefore:    time.Now().Add(-time.Hour),
		// The server recognises the key, not the certificate: a long life
		// only avoids a renewal that would break unattended boots.
		NotAfter:    time.Now().AddDate(100, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, id.Signer.Public(), id.Signer)
	if err != nil {
		return nil, fmt.Errorf("make client certificate: %w", err)
	}
	f := &ZFSFiles{
		ClientCert: filepath.Join(dir, "zfs-client.crt"),
		ClientKey:  filepath.Join(dir, identityFile),
		ServerCert: filepath.Join(dir, "zfs-server.crt"),
		BaseURL:    strings.TrimRight(id.State.Server, "/") + "/v1/zfs/",
	}
	if err := atomicfile.Write(f.ClientCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	srv, err := serverCertificate(ctx, id.State.Server, id.State.Pin)
	if err != nil {
		return nil, err
	}
	if len(srv.IPAddresses) == 0 && len(srv.DNSNames) == 0 {
		return f, fmt.Errorf("the server's certificate names no host, so libcurl will refuse it: "+
			"start the server with --managed-hostname (before its first start), or give it a certificate for %s", id.State.Server)
	}
	if err := atomicfile.Write(f.ServerCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Raw}), 0o644); err != nil {
		return nil, err
	}
	return f, nil
}

// serverCertificate fetches the server's certificate and checks it against
// the pin the device enrolled with.
func serverCertificate(ctx context.Context, base, pin string) (*x509.Certificate, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("bad server URL %q in the device state", base)
	}
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // checked against the pin below
	}}
	c, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", u.Host, err)
	}
	defer c.Close()
	certs := c.(*tls.Conn).ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return nil, errors.New("server sent no certificate")
	}
	if SPKIPin(certs[0].RawSubjectPublicKeyInfo) != pin {
		return nil, ErrPin
	}
	return certs[0], nil
}

package jose_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/jose"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readJWK(t testing.TB, name string) *jose.JWK {
	t.Helper()
	k, err := jose.ParseJWK(readFile(t, name))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return k
}

// TestThumbprintVectors compares thumbprints with those jose(1) computed.
func TestThumbprintVectors(t *testing.T) {
	f, err := os.Open("testdata/thumbprints.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) != 3 {
			t.Fatalf("bad vector line %q", sc.Text())
		}
		file, alg, want := fields[0], fields[1], fields[2]
		k := readJWK(t, file)
		for _, key := range []*jose.JWK{k, k.Public()} {
			got, err := key.Thumbprint(alg)
			if err != nil {
				t.Fatalf("%s %s: %v", file, alg, err)
			}
			if got != want {
				t.Errorf("%s %s: got %s, jose says %s", file, alg, got, want)
			}
			if !key.MatchesThumbprint(want) {
				t.Errorf("%s: MatchesThumbprint(%s %s) = false", file, alg, want)
			}
		}
		n++
	}
	if n != 15 {
		t.Fatalf("read %d vectors, want 15 (3 keys × 5 hashes)", n)
	}
}

func TestThumbprintErrors(t *testing.T) {
	k := readJWK(t, "key-ES256.jwk")
	if _, err := k.Thumbprint("S257"); err == nil {
		t.Error("unknown hash accepted")
	}
	if _, err := (&jose.JWK{Kty: "oct", K: "AAAA"}).Thumbprint("S256"); err == nil {
		t.Error("thumbprint of an oct key accepted")
	}
	// A thumbprint of another key, or a changed one, must not match.
	other := readJWK(t, "key-ES384.jwk")
	tp, _ := other.Thumbprint("S256")
	if k.MatchesThumbprint(tp) || k.MatchesThumbprint("") {
		t.Error("MatchesThumbprint matches another key's thumbprint")
	}
	mine, _ := k.Thumbprint("S256")
	if k.MatchesThumbprint(mine[:len(mine)-1] + "A") {
		t.Error("MatchesThumbprint matches a changed thumbprint")
	}
	// Members other than crv, kty, x, y do not count (RFC 7638).
	p := k.Public()
	p.Alg, p.KeyOps = "ECMR", []string{"deriveKey"}
	if got, _ := p.Thumbprint("S256"); got != mine {
		t.Errorf("thumbprint depends on alg/key_ops")
	}
	if len(k.Thumbprints()) != len(jose.ThumbprintAlgs) {
		t.Errorf("Thumbprints() = %d, want %d", len(k.Thumbprints()), len(jose.ThumbprintAlgs))
	}
}

func TestParseJWK(t *testing.T) {
	good := readJWK(t, "key-ES512.jwk")
	mod := func(f func(k *jose.JWK)) string {
		k := *good
		f(&k)
		b, _ := json.Marshal(k)
		return string(b)
	}
	tests := []struct {
		name string
		in   string
		ok   bool
	}{
		{"jose key", string(readFile(t, "key-ES512.jwk")), true},
		{"public", mod(func(k *jose.JWK) { k.D = "" }), true},
		{"oct", `{"kty":"oct","k":"AAECAw"}`, true},
		{"padded coordinates", mod(func(k *jose.JWK) { k.X += "==" }), true},
		{"not json", `{"kty":`, false},
		{"array", `[]`, false},
		{"no kty", mod(func(k *jose.JWK) { k.Kty = "" }), false},
		{"RSA", mod(func(k *jose.JWK) { k.Kty = "RSA" }), false},
		{"no crv", mod(func(k *jose.JWK) { k.Crv = "" }), false},
		{"secp256k1", mod(func(k *jose.JWK) { k.Crv = "secp256k1" }), false},
		{"crv mismatch with coordinate size", mod(func(k *jose.JWK) { k.Crv = "P-256" }), false},
		{"short x", mod(func(k *jose.JWK) { k.X = k.X[4:] }), false},
		{"no y", mod(func(k *jose.JWK) { k.Y = "" }), false},
		{"bad base64 x", mod(func(k *jose.JWK) { k.X = "!" + k.X[1:] }), false},
		{"short d", mod(func(k *jose.JWK) { k.D = k.D[4:] }), false},
		{"oct without k", `{"kty":"oct"}`, false},
		{"oct bad k", `{"kty":"oct","k":"***"}`, false},
	}
	for _, tt := range tests {
		_, err := jose.ParseJWK([]byte(tt.in))
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok = %v", tt.name, err, tt.ok)
		}
	}
}

func TestParseKeySet(t *testing.T) {
	if ks, err := jose.ParseKeySet(readFile(t, "adv-payload2.json")); err != nil || len(ks.Keys) != 3 ||
		len(ks.WithOp("verify")) != 2 || len(ks.WithOp("deriveKey")) != 1 {
		t.Fatalf("jose key set: %v", err)
	}
	for _, bad := range []string{`{}`, `{"keys":null}`, `{"keys":[null]}`, `{"keys":[{"kty":"EC"}]}`, `[]`, `{"keys":{}}`} {
		if _, err := jose.ParseKeySet([]byte(bad)); err == nil {
			t.Errorf("ParseKeySet(%s) accepted", bad)
		}
	}
	if ks, err := jose.ParseKeySet([]byte(`{"keys":[]}`)); err != nil || len(ks.Keys) != 0 {
		t.Errorf("empty key set: %v", err)
	}
}

// TestJoseJWSVectors verifies advertisements signed by jose(1).
func TestJoseJWSVectors(t *testing.T) {
	sig1 := readJWK(t, "adv-sig1.jwk").Public()
	sig2 := readJWK(t, "adv-sig2.jwk").Public()
	exc := readJWK(t, "adv-exc.jwk").Public()
	tests := []struct {
		file      string
		sigs      int
		by, notBy []*jose.JWK
		payload   string
	}{
		{"adv-flattened.jws", 1, []*jose.JWK{sig1}, []*jose.JWK{sig2, exc}, "adv-payload1.json"},
		{"adv-general.jws", 2, []*jose.JWK{sig1, sig2}, []*jose.JWK{exc}, "adv-payload2.json"},
		{"adv-missing-signature.jws", 1, []*jose.JWK{sig1}, []*jose.JWK{sig2}, "adv-payload2.json"},
	}
	for _, tt := range tests {
		j, err := jose.ParseJWS(readFile(t, tt.file))
		if err != nil {
			t.Fatalf("%s: %v", tt.file, err)
		}
		if len(j.Signatures) != tt.sigs {
			t.Errorf("%s: %d signatures, want %d", tt.file, len(j.Signatures), tt.sigs)
		}
		if !bytes.Equal(j.Payload, readFile(t, tt.payload)) {
			t.Errorf("%s: payload differs from %s", tt.file, tt.payload)
		}
		for _, k := range tt.by {
			if !j.VerifiedBy(k) {
				t.Errorf("%s: not verified by a key that signed it", tt.file)
			}
		}
		for _, k := range tt.notBy {
			if j.VerifiedBy(k) {
				t.Errorf("%s: verified by a key that did not sign it", tt.file)
			}
		}
		if h := j.Signatures[0].Header; h.Alg != "ES512" || h.Cty != "jwk-set+json" {
			t.Errorf("%s: header %+v", tt.file, h)
		}
	}
}

// tamperJWS changes one part of a JSON JWS.
func tamperJWS(t testing.TB, data []byte, f func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	b, _ := json.Marshal(m)
	return b
}

// flipB64 changes one bit in the middle of a base64url string, keeping it
// valid base64url.
func flipB64(s string) string {
	b, err := jose.B64.DecodeString(s)
	if err != nil || len(b) == 0 {
		return s + "A"
	}
	b[len(b)/2] ^= 0x01
	return jose.B64.EncodeToString(b)
}

func TestSignAdvertisement(t *testing.T) {
	var keys []*jose.JWK
	for _, c := range []*jose.Curve{jose.P521, jose.P384, jose.P256} {
		k, err := c.GenerateKey(c.Alg, "sign", "verify")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	payload := readFile(t, "adv-payload1.json")
	for n := 1; n <= 3; n++ {
		signers := keys[:n]
		data, err := jose.SignAdvertisement(payload, signers)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		json.Unmarshal(data, &m)
		_, general := m["signatures"]
		_, flat := m["signature"]
		if general != (n > 1) || flat != (n == 1) {
			t.Errorf("%d signers: general = %v, flattened = %v", n, general, flat)
		}
		j, err := jose.ParseJWS(data)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(j.Payload, payload) || len(j.Signatures) != n {
			t.Fatalf("%d signers: payload or signature count wrong", n)
		}
		for i, k := range keys {
			if got := j.VerifiedBy(k.Public()); got != (i < n) {
				t.Errorf("%d signers: VerifiedBy(key %d) = %v", n, i, got)
			}
		}
		for _, s := range j.Signatures {
			if s.Header.Cty != "jwk-set+json" {
				t.Errorf("cty = %q", s.Header.Cty)
			}
		}
		// Tampering with any part breaks every signature.
		sigs := func(m map[string]any) []map[string]any {
			if n == 1 {
				return []map[string]any{m}
			}
			var out []map[string]any
			for _, s := range m["signatures"].([]any) {
				out = append(out, s.(map[string]any))
			}
			return out
		}
		for name, f := range map[string]func(m map[string]any){
			"payload": func(m map[string]any) { m["payload"] = flipB64(m["payload"].(string)) },
			"signature": func(m map[string]any) {
				for _, s := range sigs(m) {
					s["signature"] = flipB64(s["signature"].(string))
				}
			},
			"protected": func(m map[string]any) {
				for _, s := range sigs(m) {
					s["protected"] = jose.B64.EncodeToString([]byte(`{"alg":"` + "ES512" + `","cty":"jwk-set+json","x":1}`))
				}
			},
		} {
			bad, err := jose.ParseJWS(tamperJWS(t, data, f))
			if err != nil {
				continue // rejected at parse time: fine
			}
			for i, k := range keys[:n] {
				if bad.VerifiedBy(k.Public()) {
					t.Errorf("%d signers, tampered %s: still verified by key %d", n, name, i)
				}
			}
		}
	}
	if _, err := jose.SignAdvertisement(payload, nil); err == nil {
		t.Error("signing with no keys succeeded")
	}
}

// TestSignAdvertisementJoseVerifies has jose(1) verify our signatures.
func TestSignAdvertisementJoseVerifies(t *testing.T) {
	joseCmd := testenv.RequireCmd(t, "jose")
	k1 := readJWK(t, "adv-sig1.jwk")
	k2 := readJWK(t, "key-ES256.jwk")
	data, err := jose.SignAdvertisement(readFile(t, "adv-payload1.json"), []*jose.JWK{k1, k2})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "adv.jws")
	os.WriteFile(in, data, 0o600)
	for _, key := range []string{"testdata/adv-sig1.jwk", "testdata/key-ES256.jwk"} {
		// jose warns on stderr about the signature of the other curve.
		out, err := exec.Command(joseCmd, "jws", "ver", "-i", in, "-k", key, "-O-").Output()
		if err != nil {
			t.Fatalf("jose jws ver with %s: %v", key, err)
		}
		if !bytes.Equal(out, readFile(t, "adv-payload1.json")) {
			t.Errorf("jose jws ver: payload %q", out)
		}
	}
	if out, err := exec.Command(joseCmd, "jws", "ver", "-i", in, "-k", "testdata/adv-sig2.jwk").CombinedOutput(); err == nil {
		t.Errorf("jose verified our JWS with a key that did not sign it: %s", out)
	}
}

func TestParseJWSErrors(t *testing.T) {
	good := readFile(t, "adv-flattened.jws")
	general := readFile(t, "adv-general.jws")
	for name, in := range map[string][]byte{
		"not json":        []byte(`{"payload":`),
		"no signatures":   []byte(`{"payload":"e30"}`),
		"both forms":      tamperJWS(t, general, func(m map[string]any) { m["signature"] = "AAAA"; m["protected"] = "e30" }),
		"bad payload b64": tamperJWS(t, good, func(m map[string]any) { m["payload"] = "***" }),
		"bad protected":   tamperJWS(t, good, func(m map[string]any) { m["protected"] = "***" }),
		"protected not json": tamperJWS(t, good, func(m map[string]any) {
			m["protected"] = jose.B64.EncodeToString([]byte("nope"))
		}),
		"bad signature b64": tamperJWS(t, good, func(m map[string]any) { m["signature"] = "***" }),
	} {
		if _, err := jose.ParseJWS(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A signature whose alg does not match the key's curve never verifies.
	j, _ := jose.ParseJWS(tamperJWS(t, good, func(m map[string]any) {
		m["protected"] = jose.B64.EncodeToString([]byte(`{"alg":"ES256","cty":"jwk-set+json"}`))
	}))
	if j != nil && j.VerifiedBy(readJWK(t, "adv-sig1.jwk").Public()) {
		t.Error("signature with a wrong alg verified")
	}
}

// TestJoseJWEVectors decrypts JWEs made by jose(1) for known keys: ECDH,
// the Concat KDF and the AAD all have to agree with libjose.
func TestJoseJWEVectors(t *testing.T) {
	want := readFile(t, "ecdh-es.plaintext")
	for _, crv := range []string{"P-256", "P-384", "P-521"} {
		t.Run(crv, func(t *testing.T) {
			key := readJWK(t, "ecdh-es-"+crv+".jwk")
			j, err := jose.ParseCompact(string(readFile(t, "ecdh-es-"+crv+".jwe")))
			if err != nil {
				t.Fatal(err)
			}
			if j.Header.Alg != "ECDH-ES" || j.Header.Epk == nil || j.Header.Epk.Crv != crv {
				t.Fatalf("header %+v", j.Header)
			}
			cek := deriveCEK(t, key, j.Header.Epk)
			got, err := j.Decrypt(cek)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("decrypted %q, want %q", got, want)
			}
			// The flattened form of the same JWE decrypts too.
			f, err := jose.ParseFlattened(j.Flattened())
			if err != nil {
				t.Fatal(err)
			}
			if got, err := f.Decrypt(cek); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("flattened: %q, %v", got, err)
			}
			// A different enc in the KDF gives a different key.
			c, _ := jose.CurveByName(crv)
			if _, err := j.Decrypt(jose.ConcatKDF(make([]byte, c.Size), "A256GCM")); !errors.Is(err, jose.ErrDecrypt) {
				t.Fatalf("wrong Z: %v", err)
			}
		})
	}
}

// deriveCEK is the recipient side of ECDH-ES: Z = x(d·epk), CEK = KDF(Z).
func deriveCEK(t testing.TB, key, epk *jose.JWK) []byte {
	t.Helper()
	c, err := jose.CurveByName(key.Crv)
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.Scalar(key)
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Point(epk)
	if err != nil {
		t.Fatal(err)
	}
	shared, err := c.ScalarMult(p, d)
	if err != nil {
		t.Fatal(err)
	}
	return jose.ConcatKDF(c.X(shared), "A256GCM")
}

// TestJWEJoseDecrypts has jose(1) decrypt a JWE we made with ECDH-ES.
func TestJWEJoseDecrypts(t *testing.T) {
	joseCmd := testenv.RequireCmd(t, "jose")
	for _, crv := range []string{"P-256", "P-521"} {
		key := readJWK(t, "ecdh-es-"+crv+".jwk")
		c, _ := jose.CurveByName(crv)
		E, ep, err := c.RandomScalar()
		if err != nil {
			t.Fatal(err)
		}
		kp, _ := c.Point(key)
		shared, _ := c.ScalarMult(kp, E)
		secret := []byte("made by tether for " + crv)
		j, err := jose.Encrypt(jose.Header{Alg: "ECDH-ES", Epk: c.JWKFromPoint(ep)}, jose.ConcatKDF(c.X(shared), "A256GCM"), secret)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(joseCmd, "jwe", "dec", "-i-", "-k", "testdata/ecdh-es-"+crv+".jwk")
		cmd.Stdin = strings.NewReader(j.Compact())
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Equal(out, secret) {
			t.Fatalf("jose jwe dec: %v: %q", err, out)
		}
	}
}

func TestJWERoundTripAndTamper(t *testing.T) {
	cek := bytes.Repeat([]byte{7}, 32)
	secret := []byte("correct horse battery staple")
	h := jose.Header{Alg: "dir", Clevis: json.RawMessage(`{"pin":"test"}`), Kid: "k1"}
	j, err := jose.Encrypt(h, cek, secret)
	if err != nil {
		t.Fatal(err)
	}
	if j.Header.Enc != "A256GCM" {
		t.Fatalf("enc = %q", j.Header.Enc)
	}
	for name, parse := range map[string]func() (*jose.JWE, error){
		"compact":    func() (*jose.JWE, error) { return jose.ParseCompact(j.Compact()) },
		"compact+ws": func() (*jose.JWE, error) { return jose.ParseCompact("  \n" + j.Compact() + "\n") },
		"flattened":  func() (*jose.JWE, error) { return jose.ParseFlattened(j.Flattened()) },
	} {
		p, err := parse()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := p.Decrypt(cek)
		if err != nil || !bytes.Equal(got, secret) {
			t.Fatalf("%s: %q, %v", name, got, err)
		}
		if pin, err := p.Header.Pin(); err != nil || pin != "test" {
			t.Errorf("%s: pin %q, %v", name, pin, err)
		}
	}
	parts := strings.Split(j.Compact(), ".")
	otherHeader := jose.B64.EncodeToString([]byte(`{"alg":"dir","clevis":{"pin":"tpm2"},"enc":"A256GCM","kid":"k1"}`))
	tamper := map[string]func(p []string){
		"ciphertext": func(p []string) { p[3] = flipB64(p[3]) },
		"tag":        func(p []string) { p[4] = flipB64(p[4]) },
		"iv":         func(p []string) { p[2] = flipB64(p[2]) },
		"header":     func(p []string) { p[0] = otherHeader },
		// The same header re-encoded with padding is different AAD.
		"header padding": func(p []string) { p[0] += "==" },
	}
	for name, f := range tamper {
		p := append([]string(nil), parts...)
		f(p)
		tj, err := jose.ParseCompact(strings.Join(p, "."))
		if err != nil {
			t.Fatalf("%s: tampered JWE does not parse: %v", name, err)
		}
		if _, err := tj.Decrypt(cek); !errors.Is(err, jose.ErrDecrypt) {
			t.Errorf("tampered %s: err = %v, want ErrDecrypt", name, err)
		}
	}
	wrong := bytes.Repeat([]byte{8}, 32)
	if _, err := j.Decrypt(wrong); !errors.Is(err, jose.ErrDecrypt) {
		t.Errorf("wrong key: %v", err)
	}
	if _, err := j.Decrypt(cek[:16]); err == nil || errors.Is(err, jose.ErrDecrypt) {
		t.Errorf("short key: %v, want a key size error", err)
	}
}

func TestParseCompactErrors(t *testing.T) {
	j, _ := jose.Encrypt(jose.Header{Alg: "dir"}, make([]byte, 32), []byte("x"))
	parts := strings.Split(j.Compact(), ".")
	hdr := func(s string) string { return jose.B64.EncodeToString([]byte(s)) }
	epk := readJWK(t, "key-ES256.jwk").Public()
	badEpk := *epk
	badEpk.X = badEpk.X[2:]
	epkJSON, _ := json.Marshal(badEpk)
	for name, f := range map[string]func(p []string) []string{
		"four parts":      func(p []string) []string { return p[:4] },
		"six parts":       func(p []string) []string { return append(p, "") },
		"header not b64":  func(p []string) []string { p[0] = "***"; return p },
		"header not json": func(p []string) []string { p[0] = hdr("nope"); return p },
		"enc A128GCM":     func(p []string) []string { p[0] = hdr(`{"alg":"dir","enc":"A128GCM"}`); return p },
		"no enc":          func(p []string) []string { p[0] = hdr(`{"alg":"dir"}`); return p },
		"encrypted key":   func(p []string) []string { p[1] = "AAAA"; return p },
		"short iv":        func(p []string) []string { p[2] = "AAAA"; return p },
		"short tag":       func(p []string) []string { p[4] = "AAAA"; return p },
		"ciphertext b64":  func(p []string) []string { p[3] = "*"; return p },
		"malformed epk": func(p []string) []string {
			p[0] = hdr(`{"alg":"ECDH-ES","enc":"A256GCM","epk":` + string(epkJSON) + `}`)
			return p
		},
		"epk without kty":  func(p []string) []string { p[0] = hdr(`{"alg":"ECDH-ES","enc":"A256GCM","epk":{}}`); return p },
		"empty everything": func(p []string) []string { return []string{"", "", "", "", ""} },
	} {
		p := f(append([]string(nil), parts...))
		if _, err := jose.ParseCompact(strings.Join(p, ".")); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := jose.ParseFlattened([]byte(`{"protected":`)); err == nil {
		t.Error("flattened: bad JSON accepted")
	}
	// No clevis member: a JWE that no pin made.
	if _, err := j.Header.Pin(); err == nil {
		t.Error("Pin() of a header without clevis succeeded")
	}
	h := jose.Header{Clevis: json.RawMessage(`{"pin":""}`)}
	if _, err := h.Pin(); err == nil {
		t.Error("Pin() with an empty pin succeeded")
	}
}

// TestConcatKDF checks the KDF against a value computed by hand from RFC
// 7518 §4.6 (a second implementation, in the test).
func TestConcatKDF(t *testing.T) {
	z := bytes.Repeat([]byte{0xab}, 66)
	var buf bytes.Buffer
	buf.Write([]byte{0, 0, 0, 1})
	buf.Write(z)
	buf.Write([]byte{0, 0, 0, 7})
	buf.WriteString("A256GCM")
	buf.Write([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	want := sha256Sum(buf.Bytes())
	if got := jose.ConcatKDF(z, "A256GCM"); !bytes.Equal(got, want) {
		t.Fatalf("ConcatKDF = %x, want %x", got, want)
	}
	if bytes.Equal(jose.ConcatKDF(z, "A128GCM"), want) {
		t.Fatal("KDF ignores enc")
	}
}

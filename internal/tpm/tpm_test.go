package tpm_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/tether-nbde/tether/internal/testenv"
	"github.com/tether-nbde/tether/internal/tpm"
	"github.com/tether-nbde/tether/internal/tpm/tpmtest"
)

func TestParseTCTI(t *testing.T) {
	for in, want := range map[string]string{
		"device:/dev/tpm0":                "device:/dev/tpm0",
		"device":                          "device:/dev/tpmrm0",
		"device:":                         "device:/dev/tpmrm0",
		"swtpm:host=127.0.0.1,port=2400":  "swtpm:host=127.0.0.1,port=2400",
		"swtpm":                           "swtpm:host=localhost,port=2321",
		"swtpm:port=9":                    "swtpm:host=localhost,port=9",
		"mssim:host=h,port=2321":          "mssim:host=h,port=2321",
		"libtss2-tcti-device.so.0:/dev/x": "device:/dev/x",
	} {
		got, err := tpm.ParseTCTI(in)
		if err != nil || got.String() != want {
			t.Errorf("ParseTCTI(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
	for _, in := range []string{"", "tabrmd", "swtpm:host", "swtpm:port=x", "swtpm:path=/x", ":x"} {
		if _, err := tpm.ParseTCTI(in); err == nil {
			t.Errorf("ParseTCTI(%q) succeeded", in)
		}
	}
}

func TestTCTIFromEnv(t *testing.T) {
	t.Setenv(tpm.EnvTCTI, "")
	t.Setenv(tpm.EnvTools, "")
	if got := tpm.TCTIFromEnv(); got != "device:/dev/tpmrm0" {
		t.Errorf("default = %q", got)
	}
	t.Setenv(tpm.EnvTools, "swtpm:port=1")
	if got := tpm.TCTIFromEnv(); got != "swtpm:port=1" {
		t.Errorf("with %s = %q", tpm.EnvTools, got)
	}
	t.Setenv(tpm.EnvTCTI, "device:/dev/tpm0")
	if got := tpm.TCTIFromEnv(); got != "device:/dev/tpm0" {
		t.Errorf("with %s = %q", tpm.EnvTCTI, got)
	}
}

func TestNoTPM(t *testing.T) {
	_, err := tpm.Open(context.Background(), "device:/dev/no-such-tpm")
	if !errors.Is(err, tpm.ErrNoTPM) {
		t.Fatalf("err = %v, want ErrNoTPM", err)
	}
	for _, s := range []string{"no TPM at device:/dev/no-such-tpm", "does not exist", "TPM2TOOLS_TCTI"} {
		if !bytes.Contains([]byte(err.Error()), []byte(s)) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	_, err = tpm.Open(context.Background(), "swtpm:host=127.0.0.1,port=1")
	if !errors.Is(err, tpm.ErrNoTPM) {
		t.Fatalf("closed port: err = %v, want ErrNoTPM", err)
	}
	t.Log(err)
}

// TestPrimaryMatchesTPM2Tools checks that tether's primary key templates
// are exactly those of tpm2_createprimary -C o -g HASH -G KEY, by comparing
// the public keys the TPM derives from them: any difference in the
// template gives another key.
func TestPrimaryMatchesTPM2Tools(t *testing.T) {
	bin := testenv.RequireCmd(t, "tpm2_createprimary")
	sw := tpmtest.Start(t)
	for _, c := range []struct{ hash, key string }{{"sha256", "ecc"}, {"sha256", "rsa"}, {"sha1", "ecc"}} {
		dir := t.TempDir()
		cmd := sw.Command(bin, "-Q", "-C", "o", "-g", c.hash, "-G", c.key, "-c", filepath.Join(dir, "p.ctx"))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("tpm2_createprimary: %v\n%s", err, out)
		}
		out, err := sw.Command("tpm2_readpublic", "-Q", "-c", filepath.Join(dir, "p.ctx"), "-o", filepath.Join(dir, "p.pub")).CombinedOutput()
		if err != nil {
			t.Fatalf("tpm2_readpublic: %v\n%s", err, out)
		}
		want, _ := os.ReadFile(filepath.Join(dir, "p.pub"))
		// swtpm has no resource manager: tpm2-tools leave objects loaded.
		sw.Command("tpm2_flushcontext", "-t").Run()

		tp := sw.Open(t)
		tmpl, err := tpm.PrimaryTemplate(c.hash, c.key)
		if err != nil {
			t.Fatal(err)
		}
		rsp, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tmpl)}.Execute(tp.Transport())
		if err != nil {
			t.Fatal(err)
		}
		tpm2.FlushContext{FlushHandle: rsp.ObjectHandle}.Execute(tp.Transport())
		tp.Close()
		if got := tpm2.Marshal(rsp.OutPublic); !bytes.Equal(got, want) {
			t.Errorf("%s/%s: primary differs from tpm2-tools':\n got %x\nwant %x", c.hash, c.key, got, want)
		}
	}
}

// TestMssimFraming: swtpm also speaks the simulator's framing on its
// server port, which is what the mssim TCTI sends.
func TestMssimFraming(t *testing.T) {
	sw := tpmtest.Start(t)
	tp, err := tpm.Open(context.Background(), "mssim:host=127.0.0.1,port="+strconv.Itoa(sw.Port))
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	if _, err := tp.ReadPCRs("sha256", []int{0, 7}); err != nil {
		t.Fatal(err)
	}
	o := tpm.SealOpts{Hash: "sha256", Key: "ecc", Bank: "sha256", PCRs: []int{7}}
	pub, priv, err := tp.Seal([]byte("m"), o)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := tp.Unseal(pub, priv, o); err != nil || string(got) != "m" {
		t.Fatalf("unseal = %q, %v", got, err)
	}
}

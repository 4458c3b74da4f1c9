package pin_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin"
	_ "github.com/tether-nbde/tether/pin/https"
	_ "github.com/tether-nbde/tether/pin/managed"
	_ "github.com/tether-nbde/tether/pin/smb"
	_ "github.com/tether-nbde/tether/pin/sss"
	_ "github.com/tether-nbde/tether/pin/tang"
	_ "github.com/tether-nbde/tether/pin/tpm2"
)

// TestConfigOfVectors: the configurations rebuilt from the pins' test
// vectors (clevis-made for tang and sss) are what luks list printed and
// luks regen used when luks parsed the pins' headers itself, byte for
// byte, and the pins that cannot rebuild theirs say so as before.
func TestConfigOfVectors(t *testing.T) {
	const thpNew, thpOld = "7ZlBzWL9tafsUmn_AjIfqbX6M8OGLFW-0_UMS66kAx4", "lCUPhuu-PUviTasudZQcGb9yHiNb-I8PaChAAC4ihSU"
	const kidNew = "ebyDl6iWAPQbso9q-sbW-1_NFOnfhuy356oEIZnZ0YQ"
	for _, c := range []struct {
		file, name, cfg, err string
		keys                 []pin.TangKey
	}{
		{file: "tang/testdata/new.jwe", name: "tang", cfg: `{"thp":"` + thpNew + `","url":"http://tang.invalid"}`,
			keys: []pin.TangKey{{URL: "http://tang.invalid", Kid: kidNew}}},
		{file: "tang/testdata/old.jwe", name: "tang", cfg: `{"thp":"` + thpOld + `","url":"http://tang.invalid"}`,
			keys: []pin.TangKey{{URL: "http://tang.invalid", Kid: "VYKuhu5IeLG5hveAQbcc-VoIAF5LTyDQ9R1DfMnSxg4"}}},
		{file: "tang/testdata/p256.jwe", name: "tang", cfg: `{"thp":"OSvF2HMU7BgeB3V0AeBSWv_KpKX5bHwOgFkzREm_LUQ","url":"http://tang.invalid"}`,
			keys: []pin.TangKey{{URL: "http://tang.invalid", Kid: "sQbIMQ6jMAv4RWLKeSzuS2K5V2ful3khGR7WGBi8Tlg"}}},
		{file: "tang/testdata/sss.jwe", name: "sss", cfg: `{"pins":{"tang":[` +
			`{"thp":"` + thpNew + `","url":"http://127.84.1.1:7500"},{"thp":"` + thpNew + `","url":"http://127.84.1.2:7500"},` +
			`{"thp":"` + thpNew + `","url":"http://127.84.1.3:7500"}]},"t":2}`,
			keys: []pin.TangKey{{URL: "http://127.84.1.1:7500", Kid: kidNew}, {URL: "http://127.84.1.2:7500", Kid: kidNew},
				{URL: "http://127.84.1.3:7500", Kid: kidNew}}},
		{file: "https/testdata/https.jwe", err: "cannot rebuild the configuration of a https binding"},
		{file: "smb/testdata/smb.jwe", err: "cannot rebuild the configuration of a smb binding"},
		{file: "managed/testdata/managed.jwe", err: "cannot rebuild the configuration of a managed binding"},
	} {
		data, err := os.ReadFile(filepath.FromSlash(c.file))
		if err != nil {
			t.Fatal(err)
		}
		j, err := jose.ParseCompact(strings.TrimSpace(string(data)))
		if err != nil {
			t.Fatal(err)
		}
		name, cfg, err := pin.ConfigOf(j)
		if name != c.name || string(cfg) != c.cfg || (err == nil) != (c.err == "") || err != nil && err.Error() != c.err {
			t.Errorf("%s: ConfigOf = %s %s %v, want %s %s %s", c.file, name, cfg, err, c.name, c.cfg, c.err)
		}
		if keys := pin.TangKeys(j); !reflect.DeepEqual(keys, c.keys) {
			t.Errorf("%s: TangKeys = %v, want %v", c.file, keys, c.keys)
		}
		// Without a server to ask, regen keeps what the header says.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rname, rcfg, rerr := pin.RegenConfig(ctx, j, pin.Options{})
		if rname != name || string(rcfg) != string(cfg) || (rerr == nil) != (err == nil) {
			t.Errorf("%s: RegenConfig offline = %s %s %v, want ConfigOf's %s %s %v", c.file, rname, rcfg, rerr, name, cfg, err)
		}
	}
}

// TestConfigOfUnknownPin: a pin this program does not know falls back as
// one that cannot rebuild its configuration, and depends on no Tang key.
func TestConfigOfUnknownPin(t *testing.T) {
	h := jose.Header{Alg: "dir", Clevis: json.RawMessage(`{"pin":"example","example":{"url":"http://a"}}`)}
	j, err := jose.Encrypt(h, make([]byte, 32), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := pin.ConfigOf(j); err == nil || err.Error() != "cannot rebuild the configuration of a example binding" {
		t.Errorf("ConfigOf: %v", err)
	}
	if _, _, err := pin.RegenConfig(context.Background(), j, pin.Options{}); err == nil {
		t.Error("RegenConfig of an unknown pin succeeded")
	}
	if k := pin.TangKeys(j); k != nil {
		t.Errorf("TangKeys: %v", k)
	}
}

package tpm_test

import (
	"reflect"
	"testing"

	"github.com/tether-nbde/tether/internal/tpm"
)

func FuzzParsePCRs(f *testing.F) {
	for _, s := range []string{"0,7", " 16 ", "", "0,,1", "24", "-1", "7,7,0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pcrs, err := tpm.ParsePCRs(s)
		if err != nil {
			return
		}
		again, err := tpm.ParsePCRs(tpm.FormatPCRs(pcrs))
		if err != nil || tpm.FormatPCRs(again) != tpm.FormatPCRs(pcrs) {
			t.Fatalf("%q: round trip %v -> %v, %v", s, pcrs, again, err)
		}
	})
}

func FuzzParseIdentityKey(f *testing.F) {
	f.Add([]byte(`{"type":"tether-tpm-identity-v1","public":"AAA=","private":"AAA="}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := tpm.ParseIdentityKey(data)
		if err != nil {
			return
		}
		if _, err := k.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzParseTCTI(f *testing.F) {
	for _, s := range []string{"device:/dev/tpmrm0", "swtpm:host=127.0.0.1,port=2321", "mssim", "tabrmd:bus_type=system"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tc, err := tpm.ParseTCTI(s)
		if err != nil {
			return
		}
		again, err := tpm.ParseTCTI(tc.String())
		if err != nil || again != tc {
			t.Fatalf("%q: round trip %v -> %v, %v", s, tc, again, err)
		}
	})
}

func FuzzParseSignatures(f *testing.F) {
	f.Add([]byte(`{"type":"tether-pcr-signatures-v1","signatures":[{"bank":"sha256","pcr_ids":"11","policy":"` +
		`AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","sig":"MEQCIA"}]}`))
	f.Add([]byte(`{"type":"tether-pcr-signatures-v1","signatures":[]}`))
	f.Add([]byte(`{"type":"x"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sigs, err := tpm.ParseSignatures(data)
		if err != nil {
			return
		}
		out, err := tpm.MarshalSignatures(sigs)
		if err != nil {
			t.Fatal(err)
		}
		again, err := tpm.ParseSignatures(out)
		if err != nil || !reflect.DeepEqual(again, sigs) {
			t.Fatalf("round trip: %v -> %v, %v", sigs, again, err)
		}
	})
}

package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// vectors reads testdata/chain.jsonl (canonical records, made by
// testdata/mkvectors.sh with sha256sum) and chain.sha256 (their hashes).
func vectors(t *testing.T) (lines [][]byte, recs []*Record, hashes []string) {
	t.Helper()
	b, err := os.ReadFile("testdata/chain.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	h, err := os.ReadFile("testdata/chain.sha256")
	if err != nil {
		t.Fatal(err)
	}
	hashes = strings.Fields(string(h))
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := append([]byte(nil), sc.Bytes()...)
		var c canonical
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("vector %d: %v", len(lines)+1, err)
		}
		lines = append(lines, line)
		recs = append(recs, &Record{Seq: c.Seq, Time: time.Unix(0, c.Time).UTC(), Device: c.Device, Action: c.Action,
			Source: c.Source, Decision: c.Decision, Reason: c.Reason, Actor: c.Actor, Prev: c.Prev})
	}
	if len(recs) != 4 || len(hashes) != len(recs) {
		t.Fatalf("vectors: %d records, %d hashes", len(recs), len(hashes))
	}
	return lines, recs, hashes
}

// The vectors, both ways: each parsed record hashes to the hash sha256sum
// computed, and marshals back to the very bytes that were hashed.
func TestHashVectors(t *testing.T) {
	lines, recs, hashes := vectors(t)
	for i, r := range recs {
		if got := r.Hash(); got != hashes[i] {
			t.Errorf("record %d: Hash() = %s, want %s", r.Seq, got, hashes[i])
		}
		b, err := json.Marshal(canonical{r.Seq, r.Time.UnixNano(), r.Device, r.Action, r.Source, r.Decision, r.Reason, r.Actor, r.Prev})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, lines[i]) {
			t.Errorf("record %d: canonical form\n%s\nwant\n%s", r.Seq, b, lines[i])
		}
	}
	// Fixed inputs written out as Go values, not read from the vectors.
	r := &Record{Seq: 2, Time: time.Date(2026, 1, 2, 4, 5, 5, 0, time.FixedZone("CET", 3600)),
		Device: "dev-1", Action: "unlock", Source: "198.51.100.1", Decision: Deny,
		Reason: `source 198.51.100.1 not in <10.0.0.0/8> & "servers"`, Prev: hashes[0]}
	if got := r.Hash(); got != hashes[1] {
		t.Errorf("record 2 from Go values (time in another zone): Hash() = %s, want %s", got, hashes[1])
	}
}

// A record exported as JSON (tether admin audit export, the admin API)
// and read back hashes the same: tether admin audit verify depends on it.
func TestHashSurvivesJSON(t *testing.T) {
	_, recs, hashes := vectors(t)
	for i, r := range recs {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		var back Record
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		if back.Hash() != hashes[i] {
			t.Errorf("record %d after a JSON round trip (%s): hash %s, want %s", r.Seq, b, back.Hash(), hashes[i])
		}
	}
}

func verify(recs []*Record) (*Chain, error) {
	c := NewChain()
	for _, r := range recs {
		if err := c.Next(r); err != nil {
			return c, err
		}
	}
	return c, nil
}

func TestChainVerifies(t *testing.T) {
	_, recs, hashes := vectors(t)
	c, err := verify(recs)
	if err != nil {
		t.Fatal(err)
	}
	if c.Seq != 4 || c.Head != hashes[3] {
		t.Fatalf("chain head %d:%s, want 4:%s", c.Seq, c.Head, hashes[3])
	}
	// From a known good point (an anchor), not from the start.
	c = &Chain{Seq: 2, Head: hashes[1]}
	for _, r := range recs[2:] {
		if err := c.Next(r); err != nil {
			t.Fatalf("chain from anchor 2: %v", err)
		}
	}
}

func clone(recs []*Record) []*Record {
	out := make([]*Record, len(recs))
	for i, r := range recs {
		c := *r
		out[i] = &c
	}
	return out
}

func TestChainDetectsTampering(t *testing.T) {
	_, recs, hashes := vectors(t)
	edits := map[string]func(r *Record){
		"seq":      func(r *Record) { r.Seq = 7 },
		"time":     func(r *Record) { r.Time = r.Time.Add(time.Nanosecond) },
		"device":   func(r *Record) { r.Device = "dev-2" },
		"action":   func(r *Record) { r.Action = "heartbeat" },
		"source":   func(r *Record) { r.Source = "192.0.2.1" },
		"decision": func(r *Record) { r.Decision = Allow },
		"reason":   func(r *Record) { r.Reason = "" },
		"actor":    func(r *Record) { r.Actor = "admin" },
		"prev":     func(r *Record) { r.Prev = Genesis },
	}
	for field, edit := range edits {
		t.Run("changed "+field, func(t *testing.T) {
			rs := clone(recs)
			edit(rs[1])
			if _, err := verify(rs); err == nil {
				t.Fatalf("record 2 with a changed %s verifies", field)
			}
		})
	}
	cases := map[string]struct {
		recs []*Record
		want string
	}{
		"removed":       {[]*Record{recs[0], recs[2], recs[3]}, "records are missing or reordered"},
		"removed first": {recs[1:], "records are missing or reordered"},
		"reordered":     {[]*Record{recs[0], recs[2], recs[1], recs[3]}, "records are missing or reordered"},
		"duplicated":    {[]*Record{recs[0], recs[1], recs[1], recs[2]}, "records are missing or reordered"},
		"removed, renumbered": {func() []*Record {
			rs := clone([]*Record{recs[0], recs[2], recs[3]})
			rs[1].Seq, rs[2].Seq = 2, 3
			return rs
		}(), "does not chain"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := verify(tc.recs)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("verify: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// The last record has no successor to betray it: the chain verifies,
	// and only its head, compared with one kept elsewhere (an anchor, the
	// store's audit_head), shows the change.
	t.Run("changed last", func(t *testing.T) {
		rs := clone(recs)
		rs[3].Reason = "nothing to see"
		c, err := verify(rs)
		if err != nil {
			t.Fatal(err)
		}
		if c.Head == hashes[3] {
			t.Fatal("a changed last record gives the same head")
		}
	})
}

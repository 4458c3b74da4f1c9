package servercli

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

const testHash = "3f9c0d5e6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e1f"

// FuzzAnchorEvents feeds the --anchors-from parser what a webhook
// receiver's log may hold — any bytes. It must never panic; every anchor
// it takes is a record number and 64 hex digits, and writing the anchors
// back as events gives the same anchors.
func FuzzAnchorEvents(f *testing.F) {
	for _, s := range []string{
		"not json\n{\"event\":\"ping\"}\n{\"event\":\"unlock\",\"seq\":12,\"hash\":\"" + testHash + "\",\"device\":\"dev-x\"}\n",
		"{\"seq\":1,\"hash\":\"" + testHash + "\"}\n{\"seq\":1,\"hash\":\"" + strings.Repeat("0", 64) + "\"}\n",
		"{\"seq\":-3,\"hash\":\"" + testHash + "\"}\n",
		"{\"seq\":2,\"hash\":\"XYZ\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var a anchorList
		n, err := a.parseEvents(bytes.NewReader(in), "events")
		if err != nil {
			return
		}
		if len(a) > n {
			t.Fatalf("%d anchors from %d lines", len(a), n)
		}
		var back bytes.Buffer
		for seq, hash := range a {
			if seq < 1 || len(hash) != 64 || strings.Trim(hash, "0123456789abcdef") != "" {
				t.Fatalf("anchor %d:%q", seq, hash)
			}
			fmt.Fprintf(&back, "{\"seq\":%d,\"hash\":%q}\n", seq, hash)
		}
		var b anchorList
		if _, err := b.parseEvents(&back, "again"); err != nil || len(b) != len(a) {
			t.Fatalf("anchors written back: %v, %d of %d", err, len(b), len(a))
		}
		for seq, hash := range a {
			if b[seq] != hash {
				t.Fatalf("anchor %d changed", seq)
			}
		}
	})
}

// TestAnchorEventsErrors: a line too long for an event, and a file
// without any anchor, are errors that name the file.
func TestAnchorEventsErrors(t *testing.T) {
	var a anchorList
	long := "{\"event\":\"x\"}\n" + strings.Repeat("a", maxEventLine+1) + "\n"
	if _, err := a.parseEvents(strings.NewReader(long), "events.jsonl"); err == nil || !strings.Contains(err.Error(), "events.jsonl line 2 is longer") {
		t.Fatalf("long line: %v", err)
	}
	if n, err := a.parseEvents(strings.NewReader("{\"event\":\"ping\"}\n"), "events.jsonl"); err != nil || n != 0 {
		t.Fatalf("no anchors: %d %v", n, err)
	}
}

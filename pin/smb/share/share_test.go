package share

import (
	"bytes"
	"strings"
	"testing"
)

// TestServeRejectsBadRequests: anything but a complete request is refused
// with exit code 2 and no reply, so tether reports the helper's message.
func TestServeRejectsBadRequests(t *testing.T) {
	for _, in := range []string{
		``,
		`not json`,
		`{"addr":"127.0.0.1:445","share":"s","path":"k"}`, // no timeout
		`{"addr":"127.0.0.1:445","share":"s","timeout_ms":1000}`,
	} {
		var out bytes.Buffer
		if code := Serve(strings.NewReader(in), &out); code != 2 || out.Len() != 0 {
			t.Errorf("%q: exit %d, reply %q", in, code, out.String())
		}
	}
}

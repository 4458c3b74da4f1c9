// Package wire holds the conventions the key server's JSON APIs share —
// the managed API, the admin API and the dashboard's API: replies and
// errors as JSON that is never cached, request bodies of bounded size,
// the peer's address, and random identifiers.
//
// It promises the error shape clients parse ({"error": "..."}, see
// docs/MANAGED.md) and that a request body over MaxRequest is refused
// with 413 before it is decoded.
package wire

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"

	"github.com/tether-nbde/tether/jose"
)

// ErrorReply is the body of every error answer.
type ErrorReply struct {
	Error string `json:"error"`
}

// MaxRequest bounds a JSON request body.
const MaxRequest = 64 << 10

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// WriteError answers with an ErrorReply.
func WriteError(w http.ResponseWriter, code int, format string, a ...any) {
	WriteJSON(w, code, ErrorReply{Error: fmt.Sprintf(format, a...)})
}

// ReadJSON decodes the request body into v (an empty body as {}). On
// failure it answers the request and returns false.
func ReadJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequest))
	if err != nil {
		WriteError(w, http.StatusRequestEntityTooLarge, "request body too large")
		return false
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		WriteError(w, http.StatusBadRequest, "malformed request: %v", err)
		return false
	}
	return true
}

// Source is the address the request came from (IPv4 unmapped), or the
// zero Addr.
func Source(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// RandomToken returns n random bytes, base64url.
func RandomToken(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return jose.B64.EncodeToString(b)
}

// AddrKey is the key of a source address for rate limits: IPv6 sources
// are grouped by /64, as one host usually holds a whole /64.
func AddrKey(a string) string {
	ip, err := netip.ParseAddr(a)
	if err != nil || !ip.Is6() || ip.Is4In6() {
		return a
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

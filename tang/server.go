package tang

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/jose"
)

// Limits that tangd enforces and that we copy, status codes included.
const (
	maxBody = 64 << 10 // 413 above
	maxPath = 4 << 10  // 414 above
)

// Server answers the Tang protocol from a key directory, the way tangd does
// (see docs/PROTOCOL.md). It notices changes to the directory (a rotation
// or an import by another process) within 10 ms (see recheck).
type Server struct {
	Dir    string
	Prefix string       // optional path prefix, e.g. "/tang"
	Log    *slog.Logger // never given secrets
	// Observe, if set, is called once per request with the endpoint
	// ("adv", "rec" or "other"), the status code and the duration.
	Observe func(endpoint string, code int, d time.Duration)

	mu      sync.Mutex
	state   *keyState
	modTime time.Time
	dir     *os.File  // open handle on Dir: fstat costs less than stat per request
	opened  time.Time // when dir was opened; reopened every second in case Dir was replaced
	checked time.Time // last look at the directory
}

// recheck is how often, at most, the key directory is looked at: a
// rotation by another process is served within this time. Under load this
// saves a system call on most requests.
const recheck = 10 * time.Millisecond

// keyState is everything precomputed from one read of the key directory.
type keyState struct {
	byKid   map[string]*Key // all five thumbprints of every key
	adv     []byte          // /adv: visible keys, signed by visible signing keys
	payload []byte
	signers []*jose.JWK
	advKid  sync.Map // key file -> []byte, /adv/{kid} for each signing key
}

// Load reads the key directory now; the server calls it by itself when the
// directory changes. It fails if there is no visible signing or exchange key.
func (s *Server) Load() error {
	st, err := s.load()
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.state = st
	s.mu.Unlock()
	return nil
}

func (s *Server) load() (*keyState, error) {
	fi, err := os.Stat(s.Dir)
	if err != nil {
		return nil, err
	}
	keys, err := LoadKeyDir(s.Dir)
	if err != nil {
		return nil, err
	}
	st := &keyState{byKid: map[string]*Key{}}
	var pub jose.KeySet
	for _, k := range keys {
		for _, tp := range k.JWK.Thumbprints() {
			st.byKid[tp] = k
		}
		if k.Hidden {
			continue
		}
		p := k.JWK.Public()
		if k.Signing() {
			p.KeyOps = []string{"verify"}
			st.signers = append(st.signers, k.JWK)
		} else {
			p.KeyOps = []string{"deriveKey"}
		}
		pub.Keys = append(pub.Keys, p)
	}
	if len(st.signers) == 0 || len(pub.Keys) == len(st.signers) {
		return nil, errors.New("key directory has no visible signing and exchange key pair")
	}
	st.payload, _ = json.Marshal(pub)
	if st.adv, err = jose.SignAdvertisement(st.payload, st.signers); err != nil {
		return nil, err
	}
	s.modTime = fi.ModTime()
	return st, nil
}

// current returns the key state, reloading it if the directory changed.
// A failed reload keeps serving the previous keys and logs why.
func (s *Server) current() *keyState {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.state != nil && now.Sub(s.checked) < recheck {
		return s.state
	}
	s.checked = now
	fi, err := s.statDir()
	if err == nil && (s.state == nil || !fi.ModTime().Equal(s.modTime)) {
		st, err := s.load()
		if err != nil {
			s.logger().Error("reload key directory failed; serving the keys loaded before", "dir", s.Dir, "err", err)
			s.modTime = fi.ModTime() // do not retry on every request
		} else {
			s.state = st
			s.logger().Info("key directory loaded", "dir", s.Dir, "keys", len(st.byKid)/len(jose.ThumbprintAlgs))
		}
	}
	return s.state
}

// SigningThumbprints returns the S256 thumbprints of the keys that sign
// /adv now, the ones a client pins (tether adv shows them too); the
// server announces them on the network.
func (s *Server) SigningThumbprints() []string {
	st := s.current()
	if st == nil {
		return nil
	}
	var tps []string
	for _, k := range st.signers {
		tp, err := k.Thumbprint("S256")
		if err == nil {
			tps = append(tps, tp)
		}
	}
	return tps
}

// statDir returns the key directory's metadata. Renames and new files
// change its mtime, which is how a rotation by another process shows.
func (s *Server) statDir() (os.FileInfo, error) {
	if s.dir != nil && time.Since(s.opened) > time.Second {
		s.dir.Close()
		s.dir = nil
	}
	if s.dir == nil {
		f, err := os.Open(s.Dir)
		if err != nil {
			return nil, err
		}
		s.dir, s.opened = f, time.Now()
	}
	fi, err := s.dir.Stat()
	if err != nil {
		s.dir.Close()
		s.dir = nil
	}
	return fi, err
}

func (s *Server) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// ServeHTTP routes /adv, /adv/{kid} and /rec/{kid} under the prefix.
// Repeated slashes are allowed, as in tangd.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rw := &statusWriter{ResponseWriter: w, code: 200}
	endpoint := s.route(rw, r)
	if s.Observe != nil {
		s.Observe(endpoint, rw.code, time.Since(start))
	}
}

func (s *Server) route(w *statusWriter, r *http.Request) string {
	path := r.URL.EscapedPath()
	if len(r.RequestURI) > maxPath || len(path) > maxPath {
		http.Error(w, "URI too long", http.StatusRequestURITooLong)
		return "other"
	}
	if s.Prefix != "" {
		p := strings.Trim(s.Prefix, "/")
		rest, ok := strings.CutPrefix(strings.TrimLeft(path, "/"), p)
		if !ok || (rest != "" && rest[0] != '/') {
			http.NotFound(w, r)
			return "other"
		}
		path = rest
	}
	var parts []string
	for _, p := range strings.Split(path, "/") {
		if p != "" {
			parts = append(parts, p)
		}
	}
	switch {
	case len(parts) == 1 && parts[0] == "adv", len(parts) == 2 && parts[0] == "adv":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, "GET")
			return "adv"
		}
		kid := ""
		if len(parts) == 2 {
			kid = parts[1]
		}
		s.adv(w, kid)
		return "adv"
	case len(parts) == 2 && parts[0] == "rec":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, "POST")
			return "rec"
		}
		s.rec(w, r, parts[1])
		return "rec"
	}
	http.NotFound(w, r)
	return "other"
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

func (s *Server) adv(w http.ResponseWriter, kid string) {
	st := s.current()
	if st == nil {
		http.Error(w, "no keys", http.StatusInternalServerError)
		return
	}
	body := st.adv
	if kid != "" {
		k, ok := st.byKid[kid]
		if !ok || !k.Signing() {
			http.NotFound(w, nil)
			return
		}
		// Like tangd, add the requested key's signature even when it is
		// visible and has signed already (two signatures, general JSON).
		b, ok := st.advKid.Load(k.File)
		if !ok {
			var err error
			b, err = jose.SignAdvertisement(st.payload, append(append([]*jose.JWK(nil), st.signers...), k.JWK))
			if err != nil {
				s.logger().Error("sign advertisement", "err", err)
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			st.advKid.Store(k.File, b)
		}
		body = b.([]byte)
	}
	w.Header().Set("Content-Type", "application/jose+json")
	// Explicit: net/http would send a reply over 2 KiB chunked.
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

func (s *Server) rec(w http.ResponseWriter, r *http.Request, kid string) {
	st := s.current()
	if st == nil {
		http.Error(w, "no keys", http.StatusInternalServerError)
		return
	}
	k, ok := st.byKid[kid]
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !k.Exchange() {
		http.Error(w, "not an exchange key", http.StatusForbidden)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if len(body) > maxBody {
		http.Error(w, "request too large", http.StatusRequestEntityTooLarge)
		return
	}
	reply, code := recoverWith(k.curve, k.scalar, body)
	if code != http.StatusOK {
		http.Error(w, http.StatusText(code), code)
		return
	}
	w.Header().Set("Content-Type", "application/jwk+json")
	w.Header().Set("Content-Length", strconv.Itoa(len(reply)))
	w.Write(reply)
}

// Recover answers one /rec request body for the private exchange key S with
// tangd's status codes: 400 for a malformed or off-curve key, 403 when
// key_ops does not allow deriveKey. It is the whole of the server's
// cryptographic work, separated from HTTP so that it can be fuzzed.
func Recover(S *jose.JWK, body []byte) ([]byte, int) {
	c, err := jose.CurveByName(S.Crv)
	if err != nil {
		return nil, http.StatusInternalServerError
	}
	d, err := c.Scalar(S)
	if err != nil {
		return nil, http.StatusInternalServerError
	}
	return recoverWith(c, d, body)
}

// recoverWith is Recover with the key's curve and scalar already parsed:
// the server's hot path.
func recoverWith(c *jose.Curve, d []byte, body []byte) ([]byte, int) {
	var x jose.JWK
	if err := jose.UnmarshalJWK(body, &x); err != nil {
		return nil, http.StatusBadRequest
	}
	if x.Kty != "EC" || (x.Alg != "" && x.Alg != "ECMR") || x.Crv != c.Name || x.D != "" {
		return nil, http.StatusBadRequest
	}
	if x.KeyOps != nil && !x.HasOp("deriveKey") {
		return nil, http.StatusForbidden
	}
	xp, err := c.Point(&x)
	if err != nil {
		return nil, http.StatusBadRequest
	}
	yp, err := c.ScalarMult(xp, d)
	if err != nil {
		return nil, http.StatusBadRequest
	}
	return recReply(c, yp), http.StatusOK
}

// recReply formats the reply JWK by hand: it is the hot path, and the
// layout is fixed (keys sorted, as tangd and encoding/json write them).
func recReply(c *jose.Curve, y []byte) []byte {
	b64 := jose.B64
	out := make([]byte, 0, 96+2*b64.EncodedLen(c.Size))
	out = append(out, `{"alg":"ECMR","crv":"`...)
	out = append(out, c.Name...)
	out = append(out, `","key_ops":["deriveKey"],"kty":"EC","x":"`...)
	out = b64.AppendEncode(out, y[1:1+c.Size])
	out = append(out, `","y":"`...)
	out = b64.AppendEncode(out, y[1+c.Size:])
	return append(out, `"}`...)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	w.code = code
	w.ResponseWriter.WriteHeader(code)
}

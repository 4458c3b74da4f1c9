package dashboard

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/internal/atomicfile"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
)

// The dashboard (docs/DASHBOARD.md): HTML, JS and CSS embedded in the
// binary and served under /ui/ on the managed TLS listener, next to the
// admin API it drives. Admins sign in with a name and password (argon2id);
// a session is a random cookie whose hash is kept in the store, so every
// replica honours it. Every change needs the session's CSRF token in a
// header and an Origin of this very page, and is audited with the admin's
// name as actor.

//go:embed ui
var uiFiles embed.FS

// Config configures the dashboard. The zero value serves it with the
// defaults below.
type Config struct {
	Off bool // no dashboard; the /ui/ paths answer 404
	// SessionIdle ends a session not used for this long (default 30 min);
	// SessionMax ends every session this long after sign-in (default 12 h).
	SessionIdle time.Duration
	SessionMax  time.Duration
	// PasswordFile is where the first start writes the initial account's
	// password (0600); "" = DATA/ui-admin.txt.
	PasswordFile string
	// KeyDir and Curve are the Tang key directory and the curve of new
	// keys, for key rotation from the dashboard (set from the server's
	// --data and --curve).
	KeyDir string
	Curve  *jose.Curve
}

const (
	sessionCookie = "__Host-tether-session" // __Host-: Secure, Path=/, no Domain, by browser rule
	csrfHeader    = "X-CSRF-Token"
	// bgHeader marks a request the page makes by itself (a live refresh):
	// it does not count as activity that keeps a session from idling out.
	bgHeader = "X-Tether-Background"
)

// Server is the dashboard of a managed server.
type Server struct {
	m        *managed.Server
	admin    *admin.API
	us       store.UIStore // nil: the store cannot hold accounts
	cfg      Config
	curveSet bool // Config.Curve was given: the server's --curve does not replace it
	limiter  loginLimiter
	argonSem chan struct{}
	hub      *uiHub
	login    *template.Template
	static   fs.FS
}

// New returns the dashboard of m, whose changes go through a (the same
// operations, audited as the signed-in account).
func New(m *managed.Server, a *admin.API, cfg Config) *Server {
	curveSet := cfg.Curve != nil
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.SessionMax <= 0 {
		cfg.SessionMax = 12 * time.Hour
	}
	if cfg.Curve == nil {
		cfg.Curve = jose.P521
	}
	u := &Server{m: m, admin: a, cfg: cfg, curveSet: curveSet, argonSem: make(chan struct{}, 2)}
	u.us, _ = m.Store().(store.UIStore)
	u.login = template.Must(template.ParseFS(uiFiles, "ui/login.html"))
	u.static, _ = fs.Sub(uiFiles, "ui/static")
	u.hub = newUIHub(m.Store(), m.Log(), m.Now)
	return u
}

// Routes adds the dashboard's pages and API under /ui/ to mux.
func (u *Server) Routes(mux *http.ServeMux) {
	if u.cfg.Off {
		return
	}
	h := func(pattern string, f http.HandlerFunc) { mux.Handle(pattern, u.headers(f)) }
	h("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusSeeOther) })
	h("GET /ui/{$}", u.index)
	h("GET /ui/login", u.loginPage)
	h("POST /ui/login", u.loginPost)
	h("POST /ui/logout", u.authed(true, u.logout))
	h("GET /ui/static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		http.StripPrefix("/ui/static/", http.FileServerFS(u.static)).ServeHTTP(w, r)
	})
	h("GET /ui/api/state", u.authed(false, u.apiState))
	h("GET /ui/api/audit", u.authed(false, u.apiAudit))
	h("GET /ui/api/events", u.authed(false, u.apiEvents))
	h("POST /ui/api/tokens", u.authed(true, u.apiToken))
	h("POST /ui/api/devices/{id}/{op}", u.authed(true, u.admin.DeviceOp))
	h("POST /ui/api/approvals/{id}/{op}", u.authed(true, u.admin.ApprovalOp))
	h("POST /ui/api/devices/{id}/pcr-states/{policy}/{op}", u.authed(true, u.admin.PCROp))
	h("POST /ui/api/lockdown", u.authed(true, u.admin.Lockdown))
	h("POST /ui/api/keys/rotate", u.authed(true, u.apiRotate))
}

// headers sets what every dashboard response carries: a strict content
// security policy (no inline script, no framing, no foreign origins).
func (u *Server) headers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "same-origin")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Strict-Transport-Security", "max-age=31536000")
		next.ServeHTTP(w, r)
	})
}

func sessionID(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// session returns the request's live session, or nil. An expired session
// is deleted. activity moves its idle clock.
func (u *Server) session(r *http.Request, activity bool) (*store.Session, error) {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" || u.us == nil {
		return nil, nil
	}
	id := sessionID(c.Value)
	s, err := u.us.Session(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := u.m.Now()
	if now.Sub(s.Created) > u.cfg.SessionMax || now.Sub(s.LastSeen) > u.cfg.SessionIdle {
		u.us.DeleteSession(r.Context(), id)
		return nil, nil
	}
	// Writing on every request would make each page view a store write;
	// a coarse clock is enough for an idle timeout of minutes.
	if activity && now.Sub(s.LastSeen) > min(time.Minute, u.cfg.SessionIdle/10) {
		if err := u.us.TouchSession(r.Context(), id, now); err != nil {
			return nil, err
		}
		s.LastSeen = now
	}
	return s, nil
}

// sameOrigin reports whether a request comes from a page of this server:
// its Origin header (which scripts cannot forge) names this very host.
// Browsers send Origin with every POST; a request without one is refused.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" || o == "null" {
		return false
	}
	return o == "https://"+r.Host
}

type ctxSession struct{}

// authed wraps a dashboard API handler: it needs a live session, and for
// a change (change=true) the same origin and the session's CSRF token.
// The admin's name and address go into the context for the audit record.
func (u *Server) authed(change bool, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		s, err := u.session(r, r.Header.Get(bgHeader) == "")
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "session store: %v", err)
			return
		}
		if s == nil {
			wire.WriteError(w, http.StatusUnauthorized, "not signed in, or the session expired: sign in again")
			return
		}
		if change {
			if !sameOrigin(r) {
				u.refuse(r, s.User, "request from another origin ("+r.Header.Get("Origin")+")")
				wire.WriteError(w, http.StatusForbidden, "cross-site request refused: it must come from this dashboard's page")
				return
			}
			tok := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(tok), []byte(s.CSRF)) != 1 {
				u.refuse(r, s.User, "missing or wrong CSRF token")
				wire.WriteError(w, http.StatusForbidden, "request refused: missing or wrong CSRF token (reload the page)")
				return
			}
		}
		ctx := admin.WithActor(r.Context(), s.User, wire.Source(r).String())
		ctx = context.WithValue(ctx, ctxSession{}, s)
		next(w, r.WithContext(ctx))
		if change {
			u.hub.kick()
		}
	}
}

// refuse audits a refused dashboard request.
func (u *Server) refuse(r *http.Request, user, reason string) {
	u.m.Record(r.Context(), &audit.Record{Action: "ui.refused", Actor: user,
		Source: wire.Source(r).String(), Decision: audit.Deny, Reason: r.Method + " " + r.URL.Path + ": " + reason})
}

func (u *Server) index(w http.ResponseWriter, r *http.Request) {
	s, err := u.session(r, true)
	if err != nil {
		http.Error(w, "session store unavailable", http.StatusInternalServerError)
		return
	}
	if s == nil {
		http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	b, _ := uiFiles.ReadFile("ui/index.html")
	w.Write(b)
}

type loginView struct {
	Error  string
	Notice string
	Name   string
}

func (u *Server) renderLogin(w http.ResponseWriter, code int, v loginView) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	u.login.Execute(w, v)
}

func (u *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	v := loginView{}
	switch r.URL.Query().Get("e") {
	case "expired":
		v.Notice = "Your session ended. Sign in again."
	case "out":
		v.Notice = "Signed out."
	}
	if u.us == nil {
		v.Error = "This server's store cannot hold dashboard accounts."
	}
	u.renderLogin(w, http.StatusOK, v)
}

func (u *Server) loginPost(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	src := wire.Source(r).String()
	if !sameOrigin(r) {
		u.renderLogin(w, http.StatusForbidden, loginView{Error: "Sign-in refused: the form was not sent from this page."})
		return
	}
	if u.us == nil {
		u.renderLogin(w, http.StatusNotImplemented, loginView{Error: "This server's store cannot hold dashboard accounts."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	name, pw := strings.TrimSpace(r.PostFormValue("name")), r.PostFormValue("password")
	// Names no account can have share one limiter key: an 8 KB name
	// must not become an 8 KB table entry.
	key := name
	if ValidUserName(name) != nil {
		key = "\x00invalid"
	}
	// The attempt is reserved before the password is verified, so that
	// concurrent guesses cannot all pass the check before any counts.
	if ok, wait := u.limiter.reserve(key, src, u.m.Now()); !ok {
		secs := int(wait.Seconds()) + 1
		w.Header().Set("Retry-After", fmt.Sprint(secs))
		u.renderLogin(w, http.StatusTooManyRequests, loginView{Name: name,
			Error: fmt.Sprintf("Too many failed sign-ins. Try again in %d s.", secs)})
		return
	}
	select {
	case u.argonSem <- struct{}{}:
	case <-ctx.Done():
		u.limiter.release(key, src)
		return
	}
	user, err := u.us.UIUser(ctx, name)
	hash := dummyHash()
	if err == nil {
		hash = user.Hash
	}
	good := VerifyPassword(hash, pw) && err == nil
	<-u.argonSem
	u.limiter.done(key, src, good, u.m.Now())
	if !good {
		u.m.Record(ctx, &audit.Record{Action: "ui.login", Actor: name, Source: src, Decision: audit.Deny, Reason: "wrong name or password"})
		u.renderLogin(w, http.StatusUnauthorized, loginView{Name: name, Error: "Wrong name or password."})
		return
	}
	secret := wire.RandomToken(32)
	now := u.m.Now()
	s := &store.Session{ID: sessionID(secret), User: user.Name, CSRF: wire.RandomToken(32), Source: src, Created: now, LastSeen: now}
	// Old sessions are swept here rather than by a timer: sign-ins are
	// rare, and expired sessions are refused when used anyway.
	u.us.DeleteSessionsBefore(ctx, now.Add(-u.cfg.SessionMax), now.Add(-u.cfg.SessionIdle))
	if err := u.us.CreateSession(ctx, s); err != nil {
		u.renderLogin(w, http.StatusInternalServerError, loginView{Error: "Cannot store the session: " + err.Error()})
		return
	}
	if err := u.m.Record(ctx, &audit.Record{Action: "ui.login", Actor: user.Name, Source: src, Decision: audit.OK}); err != nil {
		u.us.DeleteSession(ctx, s.ID)
		u.renderLogin(w, http.StatusInternalServerError, loginView{Error: "Cannot write the audit log."})
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: secret, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

func (u *Server) logout(w http.ResponseWriter, r *http.Request) {
	s := r.Context().Value(ctxSession{}).(*store.Session)
	u.us.DeleteSession(r.Context(), s.ID)
	u.m.Record(r.Context(), &audit.Record{Action: "ui.logout", Actor: s.User, Source: wire.Source(r).String(), Decision: audit.OK})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: -1})
	wire.WriteJSON(w, http.StatusOK, struct{}{})
}

// InitialAdminName is the account the first start creates.
const InitialAdminName = "admin"

// Start runs at server start: it fills in the data-directory defaults
// (keyDir is the Tang key directory, curve the server's --curve) and, if
// no dashboard account exists yet, creates InitialAdminName with a
// random password written 0600 to the password file (once: the first
// replica to start wins, later starts never write it again).
func (u *Server) Start(ctx context.Context, dataDir, keyDir string, curve *jose.Curve, log *slog.Logger) error {
	if u.cfg.KeyDir == "" {
		u.cfg.KeyDir = keyDir
	}
	if curve != nil && !u.curveSet {
		u.cfg.Curve = curve
	}
	if u.cfg.Off || u.us == nil {
		return nil
	}
	users, err := u.us.UIUsers(ctx)
	if err != nil || len(users) > 0 {
		return err
	}
	pw := wire.RandomToken(18)
	hash, err := HashPassword(pw)
	if err != nil {
		return err
	}
	file := u.cfg.PasswordFile
	if file == "" {
		file = filepath.Join(dataDir, "ui-admin.txt")
	}
	// The password is written before the account exists, so that a failed
	// start never leaves an account whose password nobody has.
	body := fmt.Sprintf("# tether dashboard: the first account (change it: tether admin user passwd %s)\nname: %s\npassword: %s\n",
		InitialAdminName, InitialAdminName, pw)
	if err := atomicfile.Write(file, []byte(body), 0o600); err != nil {
		return fmt.Errorf("write the dashboard's initial password: %w", err)
	}
	now := u.m.Now()
	err = u.us.CreateUIUser(ctx, &store.UIUser{Name: InitialAdminName, Hash: hash, Created: now, Updated: now})
	if errors.Is(err, store.ErrExists) {
		os.Remove(file) // another replica made it first: this password is void
		return nil
	}
	if err != nil {
		return err
	}
	u.m.Record(ctx, &audit.Record{Action: "ui.user.add", Actor: "server", Decision: audit.OK, Reason: InitialAdminName + " (first start)"})
	log.Info("dashboard account created", "name", InitialAdminName, "password_file", file)
	return nil
}

package dashboard

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/server/managed"
	"github.com/tether-nbde/tether/store"
	"github.com/tether-nbde/tether/tang"
	"rsc.io/qr"
)

// The dashboard's JSON API (/ui/api/...). Reads are assembled here for
// the page; changes reuse the admin API's handlers (package admin), so the
// dashboard can do nothing the admin API cannot, and both audit alike.

// UIDevice is a device as the dashboard shows it: the store's record plus
// what the audit log says about its last unlock and where it came from.
type UIDevice struct {
	admin.Device
	LastUnlock   time.Time `json:"last_unlock,omitzero"`
	LastSource   string    `json:"last_source,omitempty"`
	LastAttempt  time.Time `json:"last_attempt,omitzero"`
	LastDecision string    `json:"last_decision,omitempty"`
	LastReason   string    `json:"last_reason,omitempty"`
}

// UIApproval is a pending unlock with its device's name.
type UIApproval struct {
	store.Approval
	Name string `json:"name"`
}

// UIPCRState is PCR values a device asked the server to sign that wait
// for an administrator (a signed tpm2 binding, "pcr_signer":"managed"),
// with the device's name.
type UIPCRState struct {
	store.PCRState
	Name string `json:"name"`
}

// UIKey is one Tang key of the server's key directory.
type UIKey struct {
	Thumbprint string `json:"thumbprint"`
	Use        string `json:"use"`
	Curve      string `json:"curve"`
	Advertised bool   `json:"advertised"`
}

// UIState is everything the dashboard's main views show.
type UIState struct {
	User       string `json:"user"`
	CSRF       string `json:"csrf"`
	Lockdown   bool   `json:"lockdown"`
	EnrollOpen bool   `json:"enroll_open"`
	Pin        string `json:"pin"`
	// Devices is one page of the devices that match the query's filters
	// (?q= text in name, ID or group; ?state=; ?offset= and ?limit=, at
	// most maxDevicePage): a fleet may have 100,000.
	Devices       []UIDevice     `json:"devices"`
	DeviceTotal   int            `json:"device_total"`
	DeviceMatched int            `json:"device_matched"`
	DeviceCounts  map[string]int `json:"device_counts"` // every device, by state
	Offset        int            `json:"offset"`
	Limit         int            `json:"limit"`
	Approvals     []UIApproval   `json:"approvals"`
	PCRPending    []UIPCRState   `json:"pcr_pending"`
	AuditSeq      int64          `json:"audit_seq"`
	Keys          []UIKey        `json:"keys"`
	KeysError     string         `json:"keys_error,omitempty"`
	Now           time.Time      `json:"now"`
	IdleLimit     string         `json:"idle_limit"`
}

// Device pages: the default and largest number of devices per page.
const (
	defaultDevicePage = 100
	maxDevicePage     = 500
)

// parseDeviceQuery reads the device list's filters and page from the
// query string.
func parseDeviceQuery(q url.Values) (store.DeviceQuery, error) {
	dq := store.DeviceQuery{Text: strings.TrimSpace(q.Get("q")), State: policy.State(q.Get("state")), Limit: defaultDevicePage}
	switch dq.State {
	case "", policy.Enabled, policy.Pending, policy.Disabled, policy.Revoked:
	default:
		return dq, fmt.Errorf("unknown state %q", dq.State)
	}
	for _, p := range []struct {
		name     string
		dst      *int
		min, max int
	}{{"offset", &dq.Offset, 0, math.MaxInt32}, {"limit", &dq.Limit, 1, maxDevicePage}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < p.min || n > p.max {
				return dq, fmt.Errorf("%s must be a number from %d to %d", p.name, p.min, p.max)
			}
			*p.dst = n
		}
	}
	return dq, nil
}

func (u *Server) apiState(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s := ctx.Value(ctxSession{}).(*store.Session)
	dq, err := parseDeviceQuery(r.URL.Query())
	if err != nil {
		wire.WriteError(w, http.StatusBadRequest, "%v", err)
		return
	}
	act, seq, err := u.hub.activity(ctx)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	as, err := u.m.Store().PendingApprovals(ctx, u.m.Now())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	pcrs, err := u.m.PCRStates(ctx, "", managed.PCRPending)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	page, err := u.m.Store().DevicePage(ctx, dq)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	st := UIState{User: s.User, CSRF: s.CSRF, Pin: u.m.Pin(), AuditSeq: seq, Now: u.m.Now(),
		Devices: []UIDevice{}, Approvals: []UIApproval{}, PCRPending: []UIPCRState{}, Keys: []UIKey{}, IdleLimit: u.cfg.SessionIdle.String(),
		DeviceCounts: map[string]int{}, DeviceMatched: page.Matched, Offset: dq.Offset, Limit: dq.Limit}
	for state, n := range page.Counts {
		st.DeviceCounts[string(state)] = n
		st.DeviceTotal += n
	}
	for _, d := range page.Devices {
		ud := UIDevice{Device: admin.ToDevice(d)}
		if a := act[d.ID]; a != nil {
			ud.LastUnlock, ud.LastSource, ud.LastAttempt, ud.LastDecision, ud.LastReason =
				a.lastUnlock, a.lastSource, a.lastAttempt, a.lastDecision, a.lastReason
		}
		st.Devices = append(st.Devices, ud)
	}
	// The names of the devices waiting for an administrator (a few, at
	// most).
	names := map[string]string{}
	name := func(id string) string {
		if _, ok := names[id]; !ok {
			if d, err := u.m.Store().Device(ctx, id); err == nil {
				names[id] = d.Name
			}
		}
		return names[id]
	}
	for _, a := range as {
		st.Approvals = append(st.Approvals, UIApproval{Approval: *a, Name: name(a.Device)})
	}
	for _, p := range pcrs {
		st.PCRPending = append(st.PCRPending, UIPCRState{PCRState: *p, Name: name(p.Device)})
	}
	lock, _ := u.m.Store().Setting(ctx, "lockdown")
	open, _ := u.m.Store().Setting(ctx, managed.EnrollOpenSetting)
	st.Lockdown, st.EnrollOpen = lock == "on", open == "on"
	keys, err := tang.LoadKeyDir(u.cfg.KeyDir)
	if err != nil {
		st.KeysError = err.Error()
	}
	for _, k := range keys {
		tp, _ := k.JWK.Thumbprint("S256")
		use := "exchange"
		if k.Signing() {
			use = "signing"
		}
		st.Keys = append(st.Keys, UIKey{Thumbprint: tp, Use: use, Curve: k.JWK.Crv, Advertised: !k.Hidden})
	}
	sort.SliceStable(st.Keys, func(i, j int) bool { return st.Keys[i].Advertised && !st.Keys[j].Advertised })
	wire.WriteJSON(w, http.StatusOK, st)
}

// UIAudit is a filtered page of the audit log and the chain's state.
type UIAudit struct {
	Records  []*audit.Record   `json:"records"` // newest first
	Total    int64             `json:"total"`
	Matched  int               `json:"matched"`
	Verified bool              `json:"verified"`
	Head     string            `json:"head,omitempty"`
	Error    string            `json:"error,omitempty"`
	Names    map[string]string `json:"names"`
}

// apiAudit verifies the whole chain (any edited, deleted or reordered
// record shows) and returns the newest records matching the filters.
func (u *Server) apiAudit(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	dev, action, decision := q.Get("device"), q.Get("action"), q.Get("decision")
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 1000 {
		limit = 200
	}
	out := UIAudit{Records: []*audit.Record{}, Names: map[string]string{}}
	ch := audit.NewChain()
	var matched []*audit.Record
	for after := int64(0); ; {
		recs, err := u.m.Store().Audit(ctx, after, 5000)
		if err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
			return
		}
		for _, rec := range recs {
			if out.Error == "" {
				if err := ch.Next(rec); err != nil {
					out.Error = err.Error()
				}
			}
			if (dev == "" || rec.Device == dev) && (decision == "" || rec.Decision == decision) &&
				(action == "" || rec.Action == action || strings.HasPrefix(rec.Action, action+".")) {
				matched = append(matched, rec)
			}
		}
		if len(recs) < 5000 {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	out.Total, out.Verified, out.Matched = ch.Seq, out.Error == "", len(matched)
	if out.Verified {
		out.Head = ch.Head
	}
	for i := len(matched) - 1; i >= 0 && len(out.Records) < limit; i-- {
		out.Records = append(out.Records, matched[i])
	}
	if devs, err := u.m.Store().Devices(ctx); err == nil {
		for _, d := range devs {
			out.Names[d.ID] = d.Name
		}
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

// UIToken is a new enrolment token with the command a device runs and
// that command as a QR code (an SVG data: URL).
type UIToken struct {
	admin.TokenReply
	Command string `json:"command"`
	QR      string `json:"qr"`
}

func (u *Server) apiToken(w http.ResponseWriter, r *http.Request) {
	var req admin.TokenRequest
	if !wire.ReadJSON(w, r, &req) {
		return
	}
	ttl := time.Duration(req.TTL)
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	if ttl > 30*24*time.Hour {
		wire.WriteError(w, http.StatusBadRequest, "a token may live at most 30 days")
		return
	}
	tok, hash, err := managed.MakeToken(u.m.Pin())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "%v", err)
		return
	}
	now := u.m.Now()
	t := &store.Token{Hash: hash, Group: req.Group, Note: req.Note, Created: now, Expires: now.Add(ttl)}
	if err := u.m.Store().CreateToken(r.Context(), t); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	if err := u.admin.Record(r.Context(), &audit.Record{Action: "token.create",
		Reason: "group " + strconv.Quote(req.Group) + ", expires " + t.Expires.Format(time.RFC3339)}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	// The device reaches the server where the admin's browser does; the
	// token pins the server's key, so a wrong host fails safe.
	cmd := fmt.Sprintf("tether enroll --server https://%s --token %s", r.Host, tok)
	svg, err := qrSVG(cmd)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "QR code: %v", err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, UIToken{TokenReply: admin.TokenReply{Token: tok, Expires: t.Expires}, Command: cmd,
		QR: "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(svg))})
}

// qrSVG renders text as a QR code (error correction M) in SVG, one path,
// with the four-module quiet zone scanners need.
func qrSVG(text string) (string, error) {
	c, err := qr.Encode(text, qr.M)
	if err != nil {
		return "", err
	}
	const quiet = 4
	n := c.Size + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, n, n)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y := 0; y < c.Size; y++ {
		for x := 0; x < c.Size; x++ {
			if c.Black(x, y) {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return b.String(), nil
}

func (u *Server) apiRotate(w http.ResponseWriter, r *http.Request) {
	if u.cfg.KeyDir == "" {
		wire.WriteError(w, http.StatusNotImplemented, "this server has no Tang key directory")
		return
	}
	newKeys, hidden, err := tang.Rotate(u.cfg.KeyDir, u.cfg.Curve)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "rotate keys: %v", err)
		return
	}
	var tps []string
	for _, k := range newKeys {
		tp, _ := k.JWK.Thumbprint("S256")
		tps = append(tps, tp)
	}
	reason := fmt.Sprintf("new keys %s; %d retired", strings.Join(tps, ", "), len(hidden))
	if err := u.admin.Record(r.Context(), &audit.Record{Action: "tang.rotate", Reason: reason}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	u.m.Log().Warn("tang keys rotated from the dashboard", "new", tps, "retired", len(hidden))
	u.hub.kick()
	wire.WriteJSON(w, http.StatusOK, map[string]any{"new": tps, "retired": len(hidden)})
}

// apiEvents is a server-sent event stream: "change" whenever a device,
// an approval, the lockdown or the audit log changes (on any replica: the
// hub polls the store), "expired" when the session ends.
func (u *Server) apiEvents(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	s := ctx.Value(ctxSession{}).(*store.Session)
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Time{}) // the server's write timeout is for ordinary requests
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ch := u.hub.subscribe()
	defer u.hub.unsubscribe(ch)
	send := func(ev string) bool {
		rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: {}\n\n", ev); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("hello") {
		return
	}
	check := time.NewTicker(5 * time.Second)
	defer check.Stop()
	quiet := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			if !send("change") {
				return
			}
		case <-check.C:
			// The stream does not keep a session alive, and ends with it.
			cur, err := u.us.Session(ctx, s.ID)
			now := u.m.Now()
			if errors.Is(err, store.ErrNotFound) || (err == nil &&
				(now.Sub(cur.Created) > u.cfg.SessionMax || now.Sub(cur.LastSeen) > u.cfg.SessionIdle)) {
				send("expired")
				return
			}
			if quiet++; quiet%3 == 0 {
				rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
					return
				}
			}
		}
	}
}

package dashboard

import (
	"errors"
	"net/http"
	"strings"
	"unicode"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/server/admin"
	"github.com/tether-nbde/tether/server/internal/wire"
	"github.com/tether-nbde/tether/store"
)

// Dashboard accounts, managed through the admin API (tether admin user):
// whoever holds the admin token decides who may sign in to the dashboard.
// The password travels once, over the pinned TLS connection, and the
// server keeps only its argon2id hash.

// AdminRoutes adds the admin API's account management to mux, behind the
// admin token (admin.API.Authed).
func (u *Server) AdminRoutes(mux *http.ServeMux) {
	a := u.admin.Authed
	mux.HandleFunc("GET /v1/admin/users", a(u.adminUsers))
	mux.HandleFunc("POST /v1/admin/users/{name}", a(u.adminUserSet(false)))
	mux.HandleFunc("PUT /v1/admin/users/{name}", a(u.adminUserSet(true)))
	mux.HandleFunc("DELETE /v1/admin/users/{name}", a(u.adminUserDelete))
	mux.HandleFunc("POST /v1/admin/users/{name}/unlock", a(u.adminUserUnlock))
}

// adminUserUnlock clears the sign-in brakes on an account (on the replica
// that serves the request: they live in its memory).
func (u *Server) adminUserUnlock(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	n := u.limiter.clear(name)
	if err := u.admin.Record(r.Context(), &audit.Record{Action: "ui.user.unlock", Reason: name}); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	wire.WriteJSON(w, http.StatusOK, admin.UnlockReply{Cleared: n})
}

// ValidUserName checks an account name: 1–64 letters, digits, ".", "-",
// "_" or "@".
func ValidUserName(n string) error {
	if n == "" || len(n) > 64 {
		return errors.New("account name must be 1 to 64 characters")
	}
	for _, c := range n {
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && !strings.ContainsRune(".-_@", c) {
			return errors.New("account name may contain only letters, digits, '.', '-', '_' and '@'")
		}
	}
	return nil
}

func (u *Server) uiStore(w http.ResponseWriter) store.UIStore {
	if u.us == nil {
		wire.WriteError(w, http.StatusNotImplemented, "this store cannot hold dashboard accounts")
	}
	return u.us
}

func (u *Server) adminUsers(w http.ResponseWriter, r *http.Request) {
	us := u.uiStore(w)
	if us == nil {
		return
	}
	users, err := us.UIUsers(r.Context())
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	out := []admin.UserInfo{}
	for _, u := range users {
		out = append(out, admin.UserInfo{Name: u.Name, Created: u.Created, Updated: u.Updated})
	}
	wire.WriteJSON(w, http.StatusOK, out)
}

// adminUserSet creates an account (POST) or changes its password (PUT,
// which also ends its sessions).
func (u *Server) adminUserSet(change bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		us := u.uiStore(w)
		if us == nil {
			return
		}
		name := r.PathValue("name")
		if err := ValidUserName(name); err != nil {
			wire.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		var req admin.UserRequest
		if !wire.ReadJSON(w, r, &req) {
			return
		}
		hash, err := HashPassword(req.Password)
		if err != nil {
			wire.WriteError(w, http.StatusBadRequest, "%v", err)
			return
		}
		now := u.m.Now()
		action := "ui.user.add"
		if change {
			action = "ui.user.passwd"
			err = us.SetUIUserHash(r.Context(), name, hash, now)
		} else {
			err = us.CreateUIUser(r.Context(), &store.UIUser{Name: name, Hash: hash, Created: now, Updated: now})
		}
		switch {
		case errors.Is(err, store.ErrExists):
			wire.WriteError(w, http.StatusConflict, "account %s exists", name)
			return
		case errors.Is(err, store.ErrNotFound):
			wire.WriteError(w, http.StatusNotFound, "no account %s", name)
			return
		case err != nil:
			wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
			return
		}
		if err := u.admin.Record(r.Context(), &audit.Record{Action: action, Reason: name}); err != nil {
			wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
			return
		}
		wire.WriteJSON(w, http.StatusOK, admin.UserInfo{Name: name, Updated: now})
	}
}

func (u *Server) adminUserDelete(w http.ResponseWriter, r *http.Request) {
	us := u.uiStore(w)
	if us == nil {
		return
	}
	name := r.PathValue("name")
	err := us.DeleteUIUser(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		wire.WriteError(w, http.StatusNotFound, "no account %s", name)
		return
	}
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "store: %v", err)
		return
	}
	u.admin.Record(r.Context(), &audit.Record{Action: "ui.user.remove", Reason: name})
	wire.WriteJSON(w, http.StatusOK, struct{}{})
}

package managed

import (
	"crypto/hkdf"
	"crypto/sha256"
	"net/http"
	"strconv"
	"strings"

	"github.com/tether-nbde/tether/audit"
	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/policy"
	"github.com/tether-nbde/tether/server/internal/wire"
)

// ZFS native encryption can fetch a dataset's key itself:
// keylocation=https://HOST:PORT/v1/zfs/POOL/DATASET with keyformat=raw.
// libcurl makes the request with the device's identity key as client
// certificate (SSL_CLIENT_CERT_FILE / SSL_CLIENT_KEY_FILE), so the same
// device authentication and policy apply as for managed unlocks.
//
// The key is derived from the device's exchange key and the dataset name:
//
//	key = HKDF-SHA256(ikm = S_D, info = "tether zfs key v1" ‖ 0 ‖ dataset)
//
// so it is stable across restarts and replicas, different per dataset and
// per device, and destroyed with S_D when the device is revoked. Unlike a
// managed unlock, the server does see this key: ZFS has no blinding.
// Approval-required devices are refused here (libcurl cannot wait).

const zfsInfo = "tether zfs key v1\x00"

func (m *Server) handleZFS(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	dataset := strings.Trim(r.PathValue("dataset"), "/")
	if dataset == "" || len(dataset) > 256 || strings.ContainsAny(dataset, "\x00@") {
		wire.WriteError(w, http.StatusBadRequest, "want /v1/zfs/POOL/DATASET")
		return
	}
	d := m.authDevice(w, r, "zfs-key")
	if d == nil {
		return
	}
	src := wire.Source(r)
	dec, err := m.decide(ctx, d, src)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "policy: %v", err)
		return
	}
	if dec.Outcome == policy.Wait {
		dec = policy.Decision{Outcome: policy.Deny, Reason: "this device needs approval for every unlock, which a ZFS key fetch cannot wait for"}
	}
	if dec.Outcome == policy.Deny {
		m.deny(w, r, d, src, dec)
		return
	}
	S := m.exchangeKey(w, d)
	if S == nil {
		return
	}
	c, err := jose.CurveByName(S.Crv)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "stored key: %v", err)
		return
	}
	scalar, err := c.Scalar(S)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "stored key: %v", err)
		return
	}
	defer clear(scalar)
	key, err := hkdf.Key(sha256.New, scalar, nil, zfsInfo+dataset, 32)
	if err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "derive key: %v", err)
		return
	}
	defer clear(key)
	rec := &audit.Record{Action: "zfs-key", Device: d.ID, Source: src.String(), Decision: audit.Allow, Reason: "dataset " + dataset}
	if err := m.Record(ctx, rec); err != nil {
		wire.WriteError(w, http.StatusInternalServerError, "audit: %v", err)
		return
	}
	m.st.Touch(ctx, d.ID, m.now())
	m.hooks.send(Event{Event: "unlock", Device: d.ID, Name: d.Name, Source: rec.Source, Reason: rec.Reason}, rec)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(key)))
	w.Header().Set("Cache-Control", "no-store")
	w.Write(key)
}

// Package server is tether's key server process. Run starts the Tang port
// and, when ManagedConfig.Listen is set, the managed listener, and stops
// both gracefully. This package is only the wiring; each of the server's
// four jobs is a package of its own:
//
//   - server/tangport (with server/connlimit, the descriptor caps both
//     listeners share): the Tang port, tang's endpoints plus /healthz and
//     /metrics, promising tangd's behaviour whatever managed mode does.
//   - server/managed: the managed (device) API — enrolment, device keys,
//     unlock with policy, audit and approval, heartbeats, ZFS keys,
//     webhooks — with the KEK and the managed TLS key.
//   - server/admin: the admin API under /v1/admin/, its credentials file
//     and the client tether admin uses.
//   - server/dashboard: the web UI under /ui/, and the admin API's
//     dashboard accounts.
//
// The last three share the managed listener: Managed (listener.go)
// composes them on one mux, and startManaged opens the store and the KEK,
// takes the data directory's lock (datadir.go), hands the admin
// credentials over on first start, and runs the keep-alive sweep. What
// each part promises is in its package doc; server/servertest runs this
// composition for the tests of the parts.
package server

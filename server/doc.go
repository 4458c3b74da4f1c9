// Package server is tether's key server process. It does four jobs; the
// first has packages of its own, the other three are still this package's
// files (splitting them is the open part of issue 19):
//
//   - The Tang port (server/tangport, with server/connlimit): the Tang
//     protocol endpoints of package tang (GET /adv, POST /rec/{kid}) plus
//     /healthz and /metrics, on plain HTTP or TLS. It promises tangd's
//     endpoints, status codes and limits (docs/PROTOCOL.md), unchanged by
//     managed mode, and that a flood of connections to it cannot starve
//     the managed API of file descriptors.
//   - The managed API (managed*.go, on --managed-listen, TLS with client
//     certificates): enrolment, per-device exchange keys, unlock with
//     policy and approval, heartbeats, ZFS keys, webhooks. Every decision
//     is made by package policy and recorded in the audit log before it is
//     carried out: if the record cannot be written, the unlock fails
//     (docs/MANAGED.md). The KEK (managed_kek.go) wraps the keys the store
//     holds.
//   - The admin API (admin.go, admin_creds.go, and its client in
//     admin_client.go, on the managed listener under /v1/admin/): device,
//     group, approval and setting changes, and the audit log, for a bearer
//     token of which the store keeps only the hash. A start that fails
//     leaves either no admin credential or one that was handed over, never
//     a token nobody holds (ManagedConfig.SaveAdmin).
//   - The dashboard (ui*.go, /ui/ on the managed listener): the same
//     operations for people, with named users, password hashing, sessions,
//     CSRF checks and login rate limits (docs/DASHBOARD.md).
//
// Run (server.go) starts the Tang port and, when ManagedConfig.Listen is
// set, the managed listener with the other three.
package server

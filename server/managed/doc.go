// Package managed is the managed (device) API of a key server, on the
// managed listener (--managed-listen, TLS with client certificates):
// enrolment with a token or, when an administrator allows it, without one
// (enroll.go); per-device exchange keys; unlock with policy, audit and
// approval; heartbeats and the keep-alive sweep; ZFS keys (zfs.go); and
// the webhooks that report unlocks, refusals and quiet devices
// (webhook.go). The key-encryption key (kek.go) wraps every device key and
// the managed TLS key (tls.go) that the store holds.
//
// It promises (docs/MANAGED.md):
//   - Every decision is made by package policy and recorded in the audit
//     log before it is carried out: if the record cannot be written, the
//     unlock fails.
//   - A device is known by its identity key alone; a revoked device's
//     exchange key is destroyed, so nothing bound to it decrypts again.
//   - The server never sees a disk key: an unlock is a blinded exchange
//     (ZFS keys, which ZFS cannot blind, are the documented exception).
//   - Every replica on one store presents the same TLS key, so devices
//     fail over between them; a store set up with another KEK is refused.
//
// The admin API (server/admin) and the dashboard (server/dashboard) act
// on the same devices through Server's exported methods; package server
// puts the three on one listener.
package managed

// Package admin is the admin API of a managed key server: JSON under
// /v1/admin/ on the managed listener, for device, group, approval and
// setting changes, enrolment tokens and the audit log (admin.go); the
// admin credentials file, DATA/admin.json (creds.go); and Client, which
// tether admin uses (client.go, users.go).
//
// It promises:
//   - Only a request with the admin token is served; the store keeps only
//     the token's SHA-256, compared in constant time.
//   - Every change is recorded in the audit log, with "admin" or the
//     dashboard account that made it (WithActor) as the actor.
//   - The admin credentials always exist: on first start InitToken hands
//     the token over before the store records its hash, so a start that
//     fails leaves either no admin credential or one that was handed
//     over, never a token nobody holds; ResetCredentials reissues it
//     offline.
//   - Client authenticates the server by the pin in the credentials, not
//     by a CA.
//
// The dashboard's accounts are managed under /v1/admin/users too, by
// package dashboard behind Authed; their wire types are here.
package admin

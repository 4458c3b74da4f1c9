// Package dashboard is the web dashboard of a managed key server, under
// /ui/ on the managed listener (docs/DASHBOARD.md): the page and its
// assets, embedded (ui/); sign-in, sessions and CSRF checks
// (dashboard.go); the page's JSON API and live updates (api.go, hub.go);
// password hashing and sign-in limits (password.go); and the dashboard
// accounts, which the admin API manages (users.go).
//
// It promises:
//   - It can do nothing the admin API cannot: its changes go through
//     package admin's handlers and are audited with the signed-in
//     account's name and address.
//   - Passwords are kept only as argon2id hashes; sessions only as the
//     hash of their cookie, in the store, so every replica honours them.
//   - A change needs a live session, this very page's Origin and the
//     session's CSRF token; sign-in guesses are braked per address, per
//     account and per pair, and a brake is never forgotten while it holds.
//   - The first start writes the first account's password (0600) before
//     the account exists, so no account is left whose password nobody has.
package dashboard

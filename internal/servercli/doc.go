// Package servercli holds the commands of the tether-server binary: "tether
// server" (the key server, its keys) and "tether admin" (devices, tokens,
// dashboard accounts of a managed server). They are commands of
// internal/command like tether's own, and Commands lists them for
// cmd/tether-server, which runs them with tether's (internal/cli); they
// live apart because they bring the server, its stores and its
// dashboard, which the boot-time tether binary does without
// (internal/cli/forward.go).
package servercli

// Package servercli holds the commands of the tether-server binary: "tether
// server" (the key server, its keys) and "tether admin" (devices, tokens,
// dashboard accounts of a managed server). They register with internal/cli
// like every other command; they live apart because they bring the
// server, its stores and its dashboard, which the boot-time tether binary
// does without (internal/cli/forward.go).
package servercli

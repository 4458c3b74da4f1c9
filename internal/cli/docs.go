package cli

// What internal/docgen needs beyond the command table (Binary.Commands)
// to write the man pages and completions of both binaries.

import "strings"

// Overview is the text "tether help" starts with, before the command list.
func Overview() string { return overview }

// ServerGroups are the command groups that live in tether-server, with
// their one-line summaries.
func ServerGroups() map[string]string {
	m := make(map[string]string, len(serverGroups))
	for k, v := range serverGroups {
		m[k] = v
	}
	return m
}

// IsServerCommand reports whether the command named name belongs to
// tether-server (and its manual to that package).
func IsServerCommand(name string) bool {
	_, ok := serverGroups[strings.Fields(name)[0]]
	return ok
}

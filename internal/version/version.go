// Package version is what tether's binaries say about themselves: the
// release they were packaged as and the build that made them. It imports
// only the standard library so that tether-smb, which links little else,
// can use it too.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// Version is the release, set when a package is built:
//
//	go build -ldflags "-X github.com/tether-nbde/tether/internal/version.Version=1.2.3"
//
// A plain "go build" leaves it "devel"; the build info below still says
// which commit it was.
var Version = "devel"

// Commit and CommitTime stand in for the VCS stamp when the toolchain did
// not record one: Go stamps only builds in a checkout whose .git is a
// directory, not a git worktree's .git file, nor a source tarball.
// scripts/package.sh sets them with -X like Version.
var Commit, CommitTime string

// Info is the build information of the running binary.
type Info struct {
	Version   string // Version
	GoVersion string // the toolchain that built it
	Platform  string // GOOS/GOARCH, with GOARM on 32-bit arm
	Revision  string // VCS commit, "" when built outside a checkout
	Time      string // commit time (RFC 3339), "" when unknown
	Modified  bool   // built from a checkout with uncommitted changes
}

// Get returns the running binary's build information.
func Get() Info {
	i := Info{Version: Version, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	i.Revision, i.Time = Commit, CommitTime
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		case "GOARM":
			i.Platform += "/v" + s.Value
		}
	}
	return i
}

// String is the text of "PROG --version": the version on the first line
// (what scripts read), the build on the lines after.
func (i Info) String(prog string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", prog, i.Version)
	fmt.Fprintf(&b, "  go:       %s %s\n", i.GoVersion, i.Platform)
	rev := i.Revision
	if rev == "" {
		rev = "unknown (built outside a git checkout)"
	} else if i.Modified {
		rev += " (with uncommitted changes)"
	}
	fmt.Fprintf(&b, "  revision: %s\n", rev)
	if i.Time != "" {
		fmt.Fprintf(&b, "  time:     %s\n", i.Time)
	}
	return b.String()
}

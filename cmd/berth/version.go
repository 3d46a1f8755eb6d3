package main

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// versionUsage is the synopsis of berth version (after "berth "); main.go's table lists
// the command.
const versionUsage = "version"

// versionDoc is the text of berth help version.
const versionDoc = `Prints one line: berth's module version (from the build information Go records
in the binary: "(devel)" for a build from a checkout, the tag for go install
...@vX.Y.Z), the Go version and platform it was built with, and the VCS revision
when the build recorded one. "berth --version" is the same.

Example:
  berth version
  berth (devel) go1.26.8 linux/amd64`

func runVersion(c *command, args []string) int {
	if len(args) > 0 {
		return usageError(c, "unexpected argument %q", args[0])
	}
	fmt.Fprintln(stdout, versionLine(debug.ReadBuildInfo()))
	return exitOK
}

// versionLine formats what ReadBuildInfo returned: "berth VERSION GOVERSION OS/ARCH",
// then "rev REVISION" (with "+dirty" for a modified tree) when VCS stamping was on.
func versionLine(bi *debug.BuildInfo, ok bool) string {
	version, goVersion := "unknown", runtime.Version()
	var rev string
	var dirty bool
	if ok {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		if bi.GoVersion != "" {
			goVersion = bi.GoVersion
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	line := fmt.Sprintf("berth %s %s %s/%s", version, goVersion, runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if dirty {
			rev += "+dirty"
		}
		line += " rev " + rev
	}
	return line
}

// Command berth is the berth command-line tool.
//
// Every subcommand is a line of the table in commandTable, with its synopsis and help
// text from the file that implements it:
//
//	{name: "ss", summary: "list sockets", usage: ssUsage, help: ssDoc, run: runSS},
//
// run gets its command and the arguments after the subcommand name, and returns the exit
// status: 0 success, 1 failure (the message on stderr says what was wrong), 2 usage error.
package main

import (
	"fmt"
	"io"
	"os"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// command is one subcommand.
type command struct {
	name    string
	summary string // one line for `berth help`
	usage   string // synopsis after "berth ", e.g. "port N"
	help    string // optional longer text for `berth help NAME`
	run     func(c *command, args []string) int
}

// commandTable is every subcommand, in the order berth help lists them. It is a function,
// not a variable, because help reads the table: a variable would reach itself through
// runHelp, an initialization cycle.
func commandTable() []*command {
	return []*command{
		{name: "attach", summary: "give an existing network namespace its network through berth",
			usage: attachUsage, help: attachDoc, run: runAttach},
		{name: "capture", summary: "record the packets of a running berth to a pcap file",
			usage: captureUsage, help: captureDoc, run: runCapture},
		{name: "completion", summary: "print a bash, zsh or fish completion script for berth",
			usage: completionUsage, help: completionDoc, run: runCompletion},
		{name: "demo", summary: "show ports at work: clients and servers on an in-process network",
			usage: demoUsage, help: demoDoc, run: runDemo},
		{name: "forward", summary: "add, remove or list the port forwards of a running berth run or attach",
			usage: forwardUsage, help: forwardDoc, run: runForward},
		{name: "help", summary: "show commands, or one command's usage",
			usage: "help [COMMAND]", run: func(_ *command, args []string) int { return runHelp(args) }},
		{name: "man", summary: "print berth's manual page (roff), made from this command table",
			usage: manUsage, help: manDoc, run: runMan},
		{name: "pasta", summary: "serve a namespace as pasta does, for Podman and rootlesskit",
			usage: pastaUsage, help: pastaHelp, run: dropInCommand(runPasta)},
		{name: "pesto", summary: "change the port forwards of berth running as pasta, as pesto does",
			usage: pestoUsage, help: pestoHelp, run: dropInCommand(runPesto)},
		{name: "port", summary: "show a port's RFC 6335 category and registered services",
			usage: portUsage, help: portDoc, run: runPort},
		{name: "run", summary: "run a command in a new network namespace networked through berth",
			usage: runUsage, help: runDoc, run: runRun},
		{name: "services", summary: "look up the IANA service registry by name or port",
			usage: servicesUsage, help: servicesDoc, run: runServices},
		{name: "slirp4netns", summary: "serve a namespace as slirp4netns does, for rootlesskit and Podman",
			usage: slirp4netnsUsage, help: slirp4netnsHelp, run: dropInCommand(runSlirp4netns)},
		{name: "ss", summary: "list the sockets of a running berth (like ss)",
			usage: ssUsage, help: ssDoc, run: runSS},
		{name: "stats", summary: "show the counters of a running berth (like nstat)",
			usage: statsUsage, help: statsDoc, run: runStats},
		{name: "up", summary: "run a berth host on a TUN or TAP device",
			usage: upUsage, help: upHelp(), run: runUp},
		{name: "version", summary: "print berth's version and the Go it was built with",
			usage: versionUsage, help: versionDoc, run: runVersion},
		{name: "vm", summary: "serve a virtual machine's network over a UNIX socket (QEMU)",
			usage: vmUsage, help: vmDoc, run: runVM},
	}
}

// lookup returns the command called name, or nil.
func lookup(name string) *command {
	for _, c := range commandTable() {
		if c.name == name {
			return c
		}
	}
	return nil
}

// stdout and stderr are where subcommands write; tests may replace them.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

func main() {
	// The re-executed child of rootless berth run (rootless_linux.go) is dispatched
	// first, before anything of a command runs: it sets up the new namespaces and
	// becomes COMMAND.
	if len(os.Args) > 1 && os.Args[1] == rootlessChildArg {
		os.Exit(rootlessChild(os.Args[2:]))
	}
	// berth as slirp4netns, pasta or pesto (slirp4netns.go).
	if code := dropInMain(os.Args); code >= 0 {
		os.Exit(code)
	}
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		args[0] = "help"
	case "-version", "--version":
		args[0] = "version"
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(stderr, "berth: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	// Every command answers -h and --help the same way, whatever its own parsing: its
	// usage and help on stdout, exit 0 (a later -h is each command's parser's to see).
	if len(args) > 1 && isHelpFlag(args[1]) {
		return runHelp([]string{c.name})
	}
	return c.run(c, args[1:])
}

// isHelpFlag reports whether a is a request for help: -h, -help or --help.
func isHelpFlag(a string) bool { return a == "-h" || a == "-help" || a == "--help" }

// fail prints "berth NAME: message" on stderr and returns exitFailure.
func fail(name, format string, a ...any) int {
	fmt.Fprintf(stderr, "berth %s: %s\n", name, fmt.Sprintf(format, a...))
	return exitFailure
}

// usageError prints the command's usage on stderr and returns exitUsage.
func usageError(c *command, format string, a ...any) int {
	if format != "" {
		fmt.Fprintf(stderr, "berth %s: %s\n", c.name, fmt.Sprintf(format, a...))
	}
	fmt.Fprintf(stderr, "usage: berth %s\n", c.usage)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: berth COMMAND [ARGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commandTable() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "berth help COMMAND" for details.`)
}

// runHelp prints the command list, or the usage and help text of the command args names;
// commands answer -h with it.
func runHelp(args []string) int {
	switch len(args) {
	case 0:
		usage(stdout)
		return exitOK
	case 1:
		h := lookup(args[0])
		if h == nil {
			fmt.Fprintf(stderr, "berth help: unknown command %q\n", args[0])
			return exitUsage
		}
		fmt.Fprintf(stdout, "usage: berth %s\n\n%s\n", h.usage, h.summary)
		if h.help != "" {
			fmt.Fprintf(stdout, "\n%s\n", h.help)
		}
		return exitOK
	}
	return usageError(lookup("help"), "too many arguments")
}

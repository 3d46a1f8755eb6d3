// Command berth is the berth command-line tool.
//
// Each subcommand lives in its own file and registers itself from an init function:
//
//	func init() {
//		register(&command{
//			name:    "ss",
//			summary: "list sockets",
//			usage:   "ss [-t|-u]",
//			run:     runSS,
//		})
//	}
//
// run gets the arguments after the subcommand name and returns the exit status: 0 success,
// 1 failure (the message on stderr says what was wrong), 2 usage error.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"
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
	run     func(args []string) int
}

var commands = map[string]*command{}

// stdout and stderr are where subcommands write; tests may replace them.
var (
	stdout io.Writer = os.Stdout
	stderr io.Writer = os.Stderr
)

// register adds c to the command table; a duplicate name is a programming error.
func register(c *command) {
	if _, dup := commands[c.name]; dup {
		panic("berth: duplicate command " + c.name)
	}
	commands[c.name] = c
}

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help":
		args[0] = "help"
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "berth: unknown command %q\n", args[0])
		usage(stderr)
		return exitUsage
	}
	return c.run(args[1:])
}

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
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "berth help COMMAND" for details.`)
}

var helpCmd = &command{
	name:    "help",
	summary: "show commands, or one command's usage",
	usage:   "help [COMMAND]",
}

func init() {
	helpCmd.run = runHelp // set here: runHelp reads the table that holds helpCmd
	register(helpCmd)
}

func runHelp(args []string) int {
	switch len(args) {
	case 0:
		usage(stdout)
		return exitOK
	case 1:
		c, ok := commands[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "berth help: unknown command %q\n", args[0])
			return exitUsage
		}
		fmt.Fprintf(stdout, "usage: berth %s\n\n%s\n", c.usage, c.summary)
		if c.help != "" {
			fmt.Fprintf(stdout, "\n%s\n", c.help)
		}
		return exitOK
	}
	return usageError(helpCmd, "too many arguments")
}

package main

import (
	"bytes"
	"os/exec"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/berthnet/berth/internal/testenv"
)

// TestHelpEverywhere: every command of the table answers -h and --help alike — its usage
// and help on stdout, nothing on stderr, exit 0 — before it parses anything else.
func TestHelpEverywhere(t *testing.T) {
	bin := buildBerth(t)
	helpText := map[string]string{}
	for _, c := range commandTable() {
		_, want, _ := runBerth(t, bin, nil, "help", c.name)
		helpText[c.name] = want
		for _, flag := range []string{"-h", "--help", "-help"} {
			code, out, errs := runBerth(t, bin, nil, c.name, flag)
			if code != 0 || errs != "" || out != want || !strings.HasPrefix(out, "usage: berth "+c.usage+"\n") || !strings.Contains(out, c.summary) {
				t.Errorf("berth %s %s: exit %d, stderr %q, stdout:\n%s", c.name, flag, code, errs, out)
			}
		}
	}
	// Later in the arguments, each command's own parser sees it and answers the same.
	for _, args := range [][]string{{"stats", "-z", "--help"}, {"ss", "-t", "-h"}, {"up", "--tun", "x", "-h"},
		{"capture", "f.pcap", "--help"}, {"demo", "-4", "-h"}, {"forward", "--control", "/x", "--help"},
		{"run", "--mtu", "1500", "-h"}, {"attach", "--mtu", "1500", "-help"}} {
		code, out, errs := runBerth(t, bin, nil, args...)
		if code != 0 || errs != "" || out != helpText[args[0]] {
			t.Errorf("berth %v: exit %d, stderr %q, stdout:\n%s", args, code, errs, out)
		}
	}
}

// TestUsageErrors: a usage error exits 2, says what was wrong on stderr, and prints
// nothing on stdout.
func TestUsageErrors(t *testing.T) {
	bin := buildBerth(t)
	for _, c := range []struct {
		args []string
		msg  string
	}{
		{[]string{"port"}, "berth port: want one port"},
		{[]string{"services", "22/tcpp"}, `unknown protocol "tcpp"`},
		{[]string{"stats", "--bogus"}, "unknown flag --bogus"},
		{[]string{"ss", "-4", "-6"}, "-4 and -6 exclude each other"},
		{[]string{"up"}, "--tun NAME is required"},
		{[]string{"completion"}, "want one shell"},
		{[]string{"completion", "tcsh"}, `unknown shell "tcsh"`},
		{[]string{"man", "extra"}, `unexpected argument "extra"`},
		{[]string{"version", "extra"}, `unexpected argument "extra"`},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"forward", "bogus"}, `want add MAPPING, rm MAPPING or ls, not ["bogus"]`},
	} {
		code, out, errs := runBerth(t, bin, nil, c.args...)
		if code != 2 || out != "" || !strings.Contains(errs, c.msg) {
			t.Errorf("berth %v: exit %d, stdout %q, stderr %q; want 2 and %q", c.args, code, out, errs, c.msg)
		}
	}
}

func TestVersion(t *testing.T) {
	bin := buildBerth(t)
	line := regexp.MustCompile(`^berth \S+ go1\.\d+\S* ` + runtime.GOOS + `/` + runtime.GOARCH + `( rev [0-9a-f]+(\+dirty)?)?\n$`)
	for _, args := range [][]string{{"version"}, {"--version"}, {"-version"}} {
		code, out, errs := runBerth(t, bin, nil, args...)
		if code != 0 || errs != "" || !line.MatchString(out) {
			t.Errorf("berth %v: exit %d, stderr %q, stdout %q", args, code, errs, out)
		}
	}
	// The line comes from the build information.
	bi := &debug.BuildInfo{GoVersion: "go1.99.1", Main: debug.Module{Version: "v1.2.3"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "0123456789abcdef0123"}, {Key: "vcs.modified", Value: "true"}}}
	want := "berth v1.2.3 go1.99.1 " + runtime.GOOS + "/" + runtime.GOARCH + " rev 0123456789ab+dirty"
	if got := versionLine(bi, true); got != want {
		t.Errorf("versionLine = %q, want %q", got, want)
	}
	if got := versionLine(nil, false); !strings.HasPrefix(got, "berth unknown "+runtime.Version()) {
		t.Errorf("without build info: %q", got)
	}
}

// TestServicesListing: with no argument, berth services lists the registry as getent
// services lists its database: every line "name port/proto", splittable on white space.
func TestServicesListing(t *testing.T) {
	bin := buildBerth(t)
	code, out, errs := runBerth(t, bin, nil, "services")
	if code != 0 || errs != "" {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) < 10000 {
		t.Fatalf("%d lines; the registry has over 10000 records with ports", len(lines))
	}
	field := regexp.MustCompile(`^\d+(-\d+)?/(tcp|udp|sctp|dccp)$`)
	seen := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || !field.MatchString(f[1]) || (len(f) > 2 && f[2] != "#") {
			t.Fatalf("line does not parse as getent's: %q", l)
		}
		seen[f[0]+" "+f[1]] = true
	}
	for _, want := range []string{"ssh 22/tcp", "https 443/udp", "domain 53/udp", "x11 6000-6063/tcp"} {
		if !seen[want] {
			t.Errorf("listing lacks %q", want)
		}
	}
	// Several keys, as getent takes them: the records of those found, in order, and exit
	// 2 for the one that is not.
	code, out, errs = runBerth(t, bin, nil, "services", "ssh/tcp", "nope", "domain/udp")
	if code != 2 || !strings.HasPrefix(out, "ssh                   22/tcp") || !strings.Contains(out, "\ndomain                53/udp") ||
		strings.TrimSpace(errs) != `berth services: unknown service "nope"` {
		t.Errorf("services ssh/tcp nope domain/udp: exit %d, stderr %q, stdout:\n%s", code, errs, out)
	}
	code, out, _ = runBerth(t, bin, nil, "port", "0")
	if code != 0 || !strings.Contains(out, "0 system (well-known) 0-1023: reserved by IANA") {
		t.Errorf("port 0: exit %d, %q", code, out)
	}
}

// TestCompletion checks each shell's script with that shell's own parser, that it names
// every command and every flag of the table, and (bash) that it completes.
func TestCompletion(t *testing.T) {
	bin := buildBerth(t)
	scripts := map[string]string{}
	for _, sh := range shells {
		code, out, errs := runBerth(t, bin, nil, "completion", sh)
		if code != 0 || errs != "" {
			t.Fatalf("completion %s: exit %d, %s", sh, code, errs)
		}
		scripts[sh] = out
		for _, c := range commandTable() {
			if !strings.Contains(out, c.name) {
				t.Errorf("%s script lacks the command %s", sh, c.name)
			}
			for _, f := range commandFlags(c) {
				name := strings.TrimLeft(f, "-")
				if !strings.Contains(out, name) {
					t.Errorf("%s script lacks %s's flag %s", sh, c.name, f)
				}
			}
		}
	}
	for _, sh := range shells {
		path, err := exec.LookPath(sh)
		testenv.NeedCommand(t, sh, err)
		cmd := exec.Command(path, "-n")
		cmd.Stdin = strings.NewReader(scripts[sh])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s -n: %v\n%s", sh, err, out)
		}
	}
	complete := func(words ...string) []string {
		t.Helper()
		script := scripts["bash"] + "\nCOMP_WORDS=(" + strings.Join(words, " ") + ")\nCOMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "\n_berth\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n"
		cmd := exec.Command("bash", "--norc", "--noprofile")
		cmd.Stdin = strings.NewReader(script)
		var o bytes.Buffer
		cmd.Stdout = &o
		if err := cmd.Run(); err != nil {
			t.Fatalf("bash: %v", err)
		}
		return strings.Fields(o.String())
	}
	for _, c := range []struct {
		words []string
		want  []string
	}{
		{[]string{"berth", "s"}, []string{"services", "ss", "stats"}},
		{[]string{"berth", "ss", "--j"}, []string{"--json"}},
		{[]string{"berth", "stats", "-"}, []string{"-a", "-z", "--json", "--help"}},
		{[]string{"berth", "help", "ca"}, []string{"capture"}},
		{[]string{"berth", "completion", "z"}, []string{"zsh"}},
	} {
		got := complete(c.words...)
		for _, w := range c.want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("bash completing %v: %v lacks %s", c.words, got, w)
			}
		}
		// fish completes the same line the same way (complete -C prints the candidates,
		// each followed by a tab and its description, if any).
		line := strings.Join(c.words, " ")
		script := scripts["fish"] + "\ncomplete -C " + fishQuote(line) + "\n"
		cmd := exec.Command("fish", "--no-config")
		cmd.Stdin = strings.NewReader(script)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("fish: %v", err)
		}
		var cands []string
		for _, l := range strings.Split(string(out), "\n") {
			cand, _, _ := strings.Cut(l, "\t")
			cands = append(cands, cand)
		}
		for _, w := range c.want {
			if !slices.Contains(cands, w) {
				t.Errorf("fish completing %q: %q lacks %s", line, cands, w)
			}
		}
	}
}

// TestManPage renders the page with groff, warnings on, and finds every command in it.
func TestManPage(t *testing.T) {
	bin := buildBerth(t)
	code, page, errs := runBerth(t, bin, []string{"SOURCE_DATE_EPOCH=1700000000"}, "man")
	if code != 0 || errs != "" || !strings.HasPrefix(page, `.TH BERTH 1 "2023-11-14" `) {
		t.Fatalf("man: exit %d, %s\n%.200s", code, errs, page)
	}
	groff, err := exec.LookPath("groff")
	testenv.NeedCommand(t, "groff", err)
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww")
	cmd.Stdin = strings.NewReader(page)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil || e.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, e.String())
	}
	text := regexp.MustCompile(`.\x08`).ReplaceAllString(o.String(), "") // overstrike bold
	// groff fills and justifies: a summary may be wrapped or have its spaces widened.
	text = strings.Join(strings.Fields(text), " ")
	for _, c := range commandTable() {
		if !strings.Contains(text, "berth "+c.name) || !strings.Contains(text, strings.Join(strings.Fields(c.summary), " ")) {
			t.Errorf("the rendered page lacks %s or its summary", c.name)
		}
	}
	if !strings.Contains(text, "RFC 6335 §6") {
		t.Error("non-ASCII text did not survive (§)")
	}
}

package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
)

// bashUserRules is the user's own redaction rule, next to the defaults.
const bashUserRules = `
  [[inputs.ebpf.bash_redact]]
    name = "ticket"
    pattern = 'TICKET-(?P<secret>[0-9]+)'
`

// bashConf is the integration ebpf.conf with ebpf-bash enabled next to ebpf-net.
func bashConf(t *testing.T, extra string) string {
	t.Helper()
	return pluginsConf(t, extra, `"ebpf-net", "ebpf-bash"`)
}

// pluginsConf is the integration ebpf.conf with enabled_plugins set to plugins (a TOML list's items).
func pluginsConf(t *testing.T, extra, plugins string) string {
	t.Helper()
	base := ebpfConf(extra)
	conf := strings.Replace(base, `enabled_plugins = ["ebpf-net"]`, `enabled_plugins = [`+plugins+`]`, 1)
	if conf == base {
		t.Fatalf("harness: ebpfConf no longer sets enabled_plugins as expected:\n%s", base)
	}
	return conf
}

// startBashAgent is startAgent with ebpf-bash and the user's ticket rule.
func startBashAgent(t *testing.T) *agent {
	t.Helper()
	return startAgentWith(t, bashConf(t, bashUserRules))
}

// bashPoints are the stored bash points of the logging category (the only category they may be in).
func (a *agent) bashPoints() []lpPoint {
	a.t.Helper()
	v := url.Values{"measurement": {"bash"}, "since": {"1h"}, "category": {"logging"}, "limit": {"100000"}}
	resp, err := http.Get("http://" + a.addr + "/v1/query?" + v.Encode())
	must(a.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		a.t.Fatalf("query bash: %d %s", resp.StatusCode, body)
	}
	return decodeLP(a.t, body)
}

// allBashPoints are the stored bash points of any category, to catch one stored elsewhere.
func (a *agent) allBashPoints() []lpPoint { return a.query("bash", "1h") }

// bashBinariesProbed is the collector's count of bash binaries it has put the readline probe on, from its
// latest datakit_ebpf point (-1 before the first).
func (a *agent) bashBinariesProbed() int64 {
	var last lpPoint
	for _, p := range a.query("datakit_ebpf", "1h") {
		if p.Time.After(last.Time) {
			last = p
		}
	}
	if last.Fields == nil {
		return -1
	}
	if _, ok := last.Fields[bashProbedField]; !ok {
		a.t.Fatalf("datakit_ebpf has no field %s: %v", bashProbedField, last.Fields)
	}
	return intField(last, bashProbedField)
}

// bashProbedField is the self-metric counting the bash binaries the readline uretprobe is on.
const bashProbedField = "bash_binaries_probed"

// typed is one line typed at a prompt: when it was sent, and when bash showed the next prompt (or exited).
type typed struct {
	line          string
	sent, settled time.Time
}

// bashShell is an interactive bash on a pty. Its prompt is [dkp<n>]$ with n counting prompts (a
// PROMPT_COMMAND), so the test types a line only once bash's readline is waiting for it.
type bashShell struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	pty    *os.File
	mu     sync.Mutex
	out    []byte
	exited chan struct{}
	n      int // prompts seen
	lines  []typed
}

// shellEnv is the whole environment of the test shells: no rc files, no history file, a counted prompt.
var shellEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/", "TERM=dumb", "LANG=C.UTF-8", "INPUTRC=/dev/null", "HISTFILE=",
	"PROMPT_COMMAND=__dkn=$((__dkn+1))", `PS1=[dkp${__dkn}]\$ `,
}

// startShell runs argv (which execs an interactive bash in place) on a new pty and waits for its first prompt.
func startShell(t *testing.T, name string, argv ...string) *bashShell {
	t.Helper()
	s := &bashShell{t: t, name: name, cmd: exec.Command(argv[0], argv[1:]...), exited: make(chan struct{})}
	s.cmd.Env = shellEnv
	s.cmd.Dir = "/"
	f, err := pty.StartWithSize(s.cmd, &pty.Winsize{Rows: 50, Cols: 200})
	if err != nil {
		t.Fatalf("start %s on a pty: %v", name, err)
	}
	s.pty = f
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := f.Read(buf)
			s.mu.Lock()
			s.out = append(s.out, buf[:n]...)
			s.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() { s.cmd.Wait(); close(s.exited) }()
	t.Cleanup(s.close)
	s.waitPrompt()
	return s
}

func (s *bashShell) pid() string { return strconv.Itoa(s.cmd.Process.Pid) }

func (s *bashShell) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.out)
}

// waitPrompt waits for the next prompt, [dkp<n+1>].
func (s *bashShell) waitPrompt() {
	s.t.Helper()
	s.n++
	marker := fmt.Sprintf("[dkp%d]", s.n)
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(s.output(), marker) {
		select {
		case <-s.exited:
			s.t.Fatalf("%s (pid %s) exited waiting for prompt %s; output:\n%s", s.name, s.pid(), marker, tail(s.output()))
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s (pid %s): no prompt %s after 30s; output:\n%s", s.name, s.pid(), marker, tail(s.output()))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// typeLine types line and Enter at the prompt, then waits for the next prompt (or, for exit, the exit).
func (s *bashShell) typeLine(line string) {
	s.t.Helper()
	tl := typed{line: line, sent: time.Now()}
	if _, err := s.pty.WriteString(line + "\r"); err != nil {
		s.t.Fatalf("%s: type %q: %v", s.name, line, err)
	}
	if line == "exit" {
		select {
		case <-s.exited:
		case <-time.After(30 * time.Second):
			s.t.Fatalf("%s (pid %s) did not exit; output:\n%s", s.name, s.pid(), tail(s.output()))
		}
	} else {
		s.waitPrompt()
	}
	tl.settled = time.Now()
	s.lines = append(s.lines, tl)
}

func (s *bashShell) close() {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
	s.pty.Close()
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

// wantLine is the point a typed line must produce.
type wantLine struct {
	typed
	cmd       string
	redacted  []string // names of the rules that fire, sorted
	truncated bool
}

// bashTruth is what the bash points of one shell must be.
type bashTruth struct {
	shell string // for messages
	pid   string
	user  string
	lines []wantLine // in the order typed; empty lines left out
}

func (w wantLine) String() string {
	return fmt.Sprintf("cmd=%q truncated=%v redacted=%q", w.cmd, w.truncated, strings.Join(w.redacted, ","))
}

func gotString(p lpPoint) string {
	r, ok := p.Fields["redacted"]
	if !ok {
		r = "" // absent, as wanted when no rule fires
	}
	return fmt.Sprintf("cmd=%q truncated=%v redacted=%q", p.Fields["cmd"], p.Fields["truncated"], r)
}

// expect pairs the lines a shell typed with the points they must give: redact maps a typed line to its cmd
// and rules; lines not in it are reported as typed. Empty lines give none.
func expect(s *bashShell, user string, redact map[string]wantLine) bashTruth {
	tr := bashTruth{shell: s.name, pid: s.pid(), user: user}
	for _, l := range s.lines {
		if l.line == "" {
			continue
		}
		w, ok := redact[l.line]
		if !ok {
			w = wantLine{cmd: l.line}
		}
		w.typed = l
		slices.Sort(w.redacted)
		tr.lines = append(tr.lines, w)
	}
	return tr
}

// ofPID are the points whose pid field is pid, sorted by time.
func ofPID(pts []lpPoint, pid string) []lpPoint {
	var out []lpPoint
	for _, p := range pts {
		if p.Fields["pid"] == pid {
			out = append(out, p)
		}
	}
	slices.SortStableFunc(out, func(a, b lpPoint) int { return a.Time.Compare(b.Time) })
	return out
}

// settleBash waits until the shell's points are as many as its lines (or a generous deadline), then a few
// more intervals for duplicates, and compares them with the truth one by one.
func settleBash(t *testing.T, a *agent, tr bashTruth) {
	t.Helper()
	deadline := time.Now().Add(max(30*time.Second, 15*interval))
	for len(ofPID(a.bashPoints(), tr.pid)) < len(tr.lines) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * interval) // a duplicate or late point would show up now
	got := ofPID(a.bashPoints(), tr.pid)
	if len(got) != len(tr.lines) || !sameCmds(got, tr.lines) {
		var b strings.Builder
		for i := 0; i < max(len(got), len(tr.lines)); i++ {
			w, g := "(none)", "(none)"
			if i < len(tr.lines) {
				w = tr.lines[i].String()
			}
			if i < len(got) {
				g = gotString(got[i])
			}
			mark := "  "
			if w != g {
				mark = "≠ "
			}
			fmt.Fprintf(&b, "%s%2d want %s\n     got  %s\n", mark, i, w, g)
		}
		t.Fatalf("%s (pid %s): %d bash points, want %d, in the order typed:\n%s", tr.shell, tr.pid, len(got), len(tr.lines), b.String())
	}
	for i, p := range got {
		for _, bad := range bashPointProblems(p, tr, tr.lines[i]) {
			t.Errorf("%s (pid %s) line %d %q: %s", tr.shell, tr.pid, i, tr.lines[i].line, bad)
		}
	}
}

func sameCmds(got []lpPoint, want []wantLine) bool {
	for i := range got {
		if got[i].Fields["cmd"] != want[i].cmd {
			return false
		}
	}
	return true
}

// timeSlack allows for the collector's monotonic-to-wall clock conversion.
const timeSlack = time.Second

var messageRE = regexp.MustCompile("^(\\S+) pid:`([^`]*)` user:`([^`]*)` cmd:`(.*)`$")

// bashPointProblems lists what is wrong with a point whose cmd is the expected one: fields, types, message,
// rules, truncation, and a time inside the window in which readline returned the line.
func bashPointProblems(p lpPoint, tr bashTruth, w wantLine) []string {
	var bad []string
	hostname, _ := os.Hostname()
	wantTags := map[string]string{"host": hostname, "suite": "integration", "run": strconv.Itoa(os.Getpid())}
	for k, v := range wantTags {
		if p.Tags[k] != v {
			bad = append(bad, fmt.Sprintf("tag %s=%q, want %q", k, p.Tags[k], v))
		}
	}
	for k, v := range p.Tags {
		if _, ok := wantTags[k]; !ok && k != "service" {
			bad = append(bad, fmt.Sprintf("tag %s=%q, want only the global tags (host, service, the input's tags)", k, v))
		}
	}
	for _, f := range []string{"cmd", "pid", "user", "message"} {
		if _, ok := p.Fields[f].(string); !ok {
			bad = append(bad, fmt.Sprintf("field %s=%#v, want a string", f, p.Fields[f]))
		}
	}
	if p.Fields["user"] != tr.user {
		bad = append(bad, fmt.Sprintf("user=%#v, want %q", p.Fields["user"], tr.user))
	}
	if tv, ok := p.Fields["truncated"].(bool); !ok || tv != w.truncated {
		bad = append(bad, fmt.Sprintf("truncated=%#v, want %v", p.Fields["truncated"], w.truncated))
	}
	if len(w.redacted) == 0 {
		if r, ok := p.Fields["redacted"]; ok {
			bad = append(bad, fmt.Sprintf("redacted=%#v, want no such field (no rule fires)", r))
		}
	} else {
		r, _ := p.Fields["redacted"].(string)
		names := strings.Split(r, ",")
		slices.Sort(names)
		if !slices.Equal(names, w.redacted) {
			bad = append(bad, fmt.Sprintf("redacted=%#v, want the rules %s", p.Fields["redacted"], strings.Join(w.redacted, ",")))
		}
	}
	if p.Time.Before(w.sent.Add(-timeSlack)) || p.Time.After(w.settled.Add(timeSlack)) {
		bad = append(bad, fmt.Sprintf("time %s, want between typing (%s) and the next prompt (%s)",
			p.Time.Format(time.RFC3339Nano), w.sent.Format(time.RFC3339Nano), w.settled.Format(time.RFC3339Nano)))
	}
	msg, _ := p.Fields["message"].(string)
	m := messageRE.FindStringSubmatch(msg)
	if m == nil {
		bad = append(bad, fmt.Sprintf("message %q, want <RFC3339> pid:`%s` user:`%s` cmd:`%s`", msg, tr.pid, tr.user, w.cmd))
	} else {
		ts, err := time.Parse(time.RFC3339, m[1])
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("message time %q is not RFC3339: %v", m[1], err))
		case ts.Before(p.Time.Truncate(time.Second)) || ts.After(p.Time.Add(interval+5*time.Second)):
			bad = append(bad, fmt.Sprintf("message time %s, point time %s", m[1], p.Time.Format(time.RFC3339Nano)))
		}
		if m[2] != tr.pid || m[3] != tr.user || m[4] != w.cmd {
			bad = append(bad, fmt.Sprintf("message %q, want pid:`%s` user:`%s` cmd:`%s`", msg, tr.pid, tr.user, w.cmd))
		}
	}
	return bad
}

// checkNoSecrets fails for any stored bash point, of any shell or category, with a secret in a tag or field.
func checkNoSecrets(t *testing.T, a *agent, secrets []string) {
	t.Helper()
	for _, p := range a.allBashPoints() {
		var vals []string
		for k, v := range p.Tags {
			vals = append(vals, k+"="+v)
		}
		for k, v := range p.Fields {
			vals = append(vals, fmt.Sprintf("%s=%v", k, v))
		}
		for _, v := range vals {
			for _, s := range secrets {
				if strings.Contains(v, s) {
					t.Errorf("secret %q stored in bash point (pid %v): %s", s, p.Fields["pid"], v)
				}
			}
		}
	}
}

// waitBashProbed waits until the collector has put the readline probe on the bash binary at path: its
// bash_binaries_probed count is above before, and its log names the binary's inode.
func waitBashProbed(t *testing.T, a *agent, what, path string, before int64) {
	t.Helper()
	named := regexp.MustCompile(fmt.Sprintf(`bash: probing readline.* inode=%d\b`, inode(t, path)))
	a.waitFor(what, max(30*time.Second, 15*interval), func() bool {
		// The log is read only once the count says a binary was probed (the agent keeps writing it).
		return a.bashBinariesProbed() > before && named.MatchString(a.log.String())
	})
}

// TestBashCapturesEveryInteractiveLineOnceInOrder types known lines into interactive host bashes (as root, and
// as nobody through setpriv) on a pty, each at its prompt, and checks the stored bash points of each shell
// are exactly its non-empty lines, once each, in order, redacted by the default and user rules, lines either
// side of the short record's end whole, the long line cut to 1023 bytes and marked truncated, with DataKit's
// fields and message; and that no stored bash
// point holds a secret.
func TestBashCapturesEveryInteractiveLineOnceInOrder(t *testing.T) {
	for _, tool := range []string{"setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (util-linux): %v", tool, err)
		}
	}
	a := startBashAgent(t)
	// The host's bash must be probed before the shell shows its first prompt, or that first readline
	// (already running when the probe lands) is missed: a bash exec makes the collector probe it at once.
	waitHostBashProbed(t, a)

	const long = "echo password=LongSecret1 "
	longLine := long + strings.Repeat("x", 1500-len(long))
	root := startShell(t, "root shell", "/bin/bash", "--norc", "--noprofile", "-i")
	for _, l := range []string{
		"echo hello",
		"true",
		"ls /proc/self >/dev/null",
		"",
		"mysql -uroot -pS3cretPw -e 'select 1' || true",
		"curl -s -H 'Authorization: Bearer abc.def.ghi' http://127.0.0.1:1/ || true",
		"export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIEXAMPLEKEY",
		"echo --password=Pw0rdFlag9",
		"echo TICKET-40961723",
		"echo 'héllo wörld ✓ 日本語 🐚'",
		longLine,
		// Around the end of the short record (BASH_SHORT_LEN, NUL included): 126, 127 and 200 bytes.
		"echo " + strings.Repeat("a", 121),
		"echo " + strings.Repeat("b", 122),
		"echo " + strings.Repeat("c", 195),
		"echo done",
		"exit",
	} {
		root.typeLine(l)
	}
	if len(longLine) != 1500 {
		t.Fatalf("harness: long line is %d bytes", len(longLine))
	}
	nobody := startShell(t, "shell as nobody", "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"/bin/bash", "--norc", "--noprofile", "-i")
	for _, l := range []string{"id -un", "", "echo as nobody password=NobodyPw7", "exit"} {
		nobody.typeLine(l)
	}
	if !strings.Contains(nobody.output(), "id -un\r\nnobody\r\n") {
		t.Fatalf("harness: the setpriv shell does not run as nobody; output:\n%s", tail(nobody.output()))
	}

	redactions := map[string]wantLine{
		"mysql -uroot -pS3cretPw -e 'select 1' || true": {cmd: "mysql -uroot -p*** -e 'select 1' || true", redacted: []string{"mysql-p"}},
		"curl -s -H 'Authorization: Bearer abc.def.ghi' http://127.0.0.1:1/ || true": {
			cmd: "curl -s -H 'Authorization: Bearer ***' http://127.0.0.1:1/ || true", redacted: []string{"authorization", "bearer"}},
		"export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIEXAMPLEKEY": {cmd: "export AWS_SECRET_ACCESS_KEY=***", redacted: []string{"aws-secret"}},
		"echo --password=Pw0rdFlag9":                           {cmd: "echo --password=***", redacted: []string{"password-flag"}},
		"echo TICKET-40961723":                                 {cmd: "echo TICKET-***", redacted: []string{"ticket"}},
		"echo as nobody password=NobodyPw7":                    {cmd: "echo as nobody password=***", redacted: []string{"password"}},
		// Cut to 1023 bytes first, then redacted.
		longLine: {cmd: strings.Replace(longLine[:1023], "LongSecret1", "***", 1), redacted: []string{"password"}, truncated: true},
	}
	settleBash(t, a, expect(root, "root", redactions))
	settleBash(t, a, expect(nobody, "nobody", redactions))
	checkNoSecrets(t, a, []string{"S3cretPw", "abc.def.ghi", "wJalrXUtnFEMIEXAMPLEKEY", "Pw0rdFlag9", "40961723",
		"LongSecret1", "NobodyPw7"})
	if all, logging := len(a.allBashPoints()), len(a.bashPoints()); all != logging {
		t.Errorf("%d bash points stored, only %d in category logging", all, logging)
	}
}

// waitHostBashProbed makes sure the host's /bin/bash carries the readline probe.
func waitHostBashProbed(t *testing.T, a *agent) {
	t.Helper()
	must(t, exec.Command("/bin/bash", "-c", "true").Run())
	waitBashProbed(t, a, "the host's bash to be probed", "/bin/bash", 0)
}

// buildBashRoot is a root holding a copy of the host's bash (its own inode) and the libraries it needs,
// and an /etc/passwd naming uid 4242 rootlessuser (a display name unlike it, to tell the two apart).
func buildBashRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	must(t, os.Chmod(root, 0o755)) // uid 4242 must reach /bin/bash inside
	out, err := exec.Command("ldd", "/bin/bash").Output()
	must(t, err)
	files := map[string]string{"/bin/bash": "bin/bash"}
	for _, m := range regexp.MustCompile(`(/\S+) \(0x`).FindAllStringSubmatch(string(out), -1) {
		files[m[1]] = m[1]
	}
	for src, dst := range files {
		b, err := os.ReadFile(src) // follows symlinks: the copy is a plain file
		must(t, err)
		dst = filepath.Join(root, dst)
		must(t, os.MkdirAll(filepath.Dir(dst), 0o755))
		must(t, os.WriteFile(dst, b, 0o755))
	}
	must(t, os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(
		"root:x:0:0:root:/root:/bin/bash\nrootlessuser:x:4242:4242:Rootless Display Name:/:/bin/bash\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nrootless:x:4242:\n"), 0o644))
	if inode(t, filepath.Join(root, "bin/bash")) == inode(t, "/bin/bash") {
		t.Fatalf("harness: the copy of bash shares the host's inode")
	}
	return root
}

// TestBashCapturesShellsUnderAnotherRoot runs interactive copies of bash (other inodes) chrooted as uid 4242,
// whose name only the root's own /etc/passwd knows: a copy the collector probed before the shell started
// (a non-interactive holder exec'd it) has every line captured; a fresh copy probed while its shell waits
// at the first prompt has every line after that prompt captured.
func TestBashCapturesShellsUnderAnotherRoot(t *testing.T) {
	hostPasswd, err := os.ReadFile("/etc/passwd")
	must(t, err)
	if regexp.MustCompile(`(?m)^rootlessuser:|^[^:]*:[^:]*:4242:`).Match(hostPasswd) {
		t.Fatalf("harness: the host's /etc/passwd names rootlessuser or uid 4242; the test needs it not to")
	}
	a := startBashAgent(t)
	waitHostBashProbed(t, a)

	t.Run("probed before the shell starts", func(t *testing.T) {
		dir := buildBashRoot(t)
		before := a.bashBinariesProbed()
		holder := exec.Command("chroot", dir, "/bin/bash", "-c", "read x")
		in, err := holder.StdinPipe()
		must(t, err)
		must(t, holder.Start())
		t.Cleanup(func() { in.Close(); holder.Process.Kill(); holder.Wait() })
		waitBashProbed(t, a, "the collector to probe the copy of bash (a non-interactive holder runs it)", filepath.Join(dir, "bin/bash"), before)

		s := startShell(t, "shell under another root", "chroot", "--userspec=4242:4242", dir, "/bin/bash", "--norc", "--noprofile", "-i")
		for _, l := range []string{"echo first under chroot", "echo uid=$UID", "", "echo TICKET-77001234", "export AWS_SECRET_ACCESS_KEY=RootlessKey99", "exit"} {
			s.typeLine(l)
		}
		if !strings.Contains(s.output(), "\r\nuid=4242\r\n") {
			t.Fatalf("harness: the chrooted shell does not run as uid 4242; output:\n%s", tail(s.output()))
		}
		settleBash(t, a, expect(s, "rootlessuser", map[string]wantLine{
			"echo TICKET-77001234":                       {cmd: "echo TICKET-***", redacted: []string{"ticket"}},
			"export AWS_SECRET_ACCESS_KEY=RootlessKey99": {cmd: "export AWS_SECRET_ACCESS_KEY=***", redacted: []string{"aws-secret"}},
		}))
		checkNoSecrets(t, a, []string{"77001234", "RootlessKey99"})
	})

	t.Run("probed while the shell waits at its first prompt", func(t *testing.T) {
		dir := buildBashRoot(t)
		before := a.bashBinariesProbed()
		s := startShell(t, "fresh shell under another root", "chroot", "--userspec=4242:4242", dir, "/bin/bash", "--norc", "--noprofile", "-i")
		waitBashProbed(t, a, "the collector to probe the fresh copy of bash (its exec)", filepath.Join(dir, "bin/bash"), before)
		// The first readline began before the probe: its line is missed (the known limit). An empty one.
		for _, l := range []string{"", "echo second prompt", "echo password=FreshPw55", "true", "exit"} {
			s.typeLine(l)
		}
		settleBash(t, a, expect(s, "rootlessuser", map[string]wantLine{
			"echo password=FreshPw55": {cmd: "echo password=***", redacted: []string{"password"}},
		}))
		checkNoSecrets(t, a, []string{"FreshPw55"})
	})
}

// TestBashRedactionRuleErrorIsReported: a user rule whose regexp does not compile makes the agent refuse the
// config, naming the file, the key and the rule, before it creates its store.
func TestBashRedactionRuleErrorIsReported(t *testing.T) {
	conf := bashConf(t, `
  [[inputs.ebpf.bash_redact]]
    name = "ticket"
    pattern = 'TICKET-(?P<secret>[0-9]+)'
  [[inputs.ebpf.bash_redact]]
    name = "broken-rule"
    pattern = '('
`)
	dir := writeInstallDir(t, "127.0.0.1:0", conf)
	cmd := exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("agent started with a bad redaction rule instead of refusing it; output:\n%s", out)
	}
	if err == nil {
		t.Errorf("agent exited 0 with a bad redaction rule; output:\n%s", out)
	}
	for _, w := range []string{"conf.d/host/ebpf.conf", "bash_redact", "broken-rule", `"("`} {
		if !strings.Contains(string(out), w) {
			t.Errorf("error output lacks %q:\n%s", w, out)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "points.db")); err == nil {
		t.Errorf("store was created although the config was refused")
	}
}

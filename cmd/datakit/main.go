// Command datakit is the parent agent: `datakit run` runs the agent,
// `datakit query` reads stored points, `datakit monitor` shows the running
// agent, `datakit install --ebpf` installs the collector and checks the
// kernel, `datakit version` prints the version.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"dkebpf/agent"
	"dkebpf/agent/api"
	"dkebpf/agent/config"
	"dkebpf/agent/kernelcheck"
	"dkebpf/agent/monitor"
	"dkebpf/agent/store"
	_ "dkebpf/inputs/all"
)

const usage = `usage:
  datakit [run] [--dir DIR]
  datakit query MEASUREMENT [--since 5m] [--until T] [--tag k=v ...] [--category C] [--limit N] [--dir DIR]
  datakit monitor [--refresh 5s] [--once] [--dir DIR]
  datakit install --ebpf [--from PATH] [--dir DIR]
  datakit version

DIR (the install dir, holding conf.d/, externals/, data/) defaults to $DK_INSTALL_DIR,
else the directory of the datakit executable.
`

// errUsage marks errors caused by bad command-line arguments (exit code 2).
var errUsage = errors.New("usage")

// errHelp: a command's --help printed its flags (exit code 0).
var errHelp = errors.New("help")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
		cmd, args = "help", args[1:]
	} else if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "run":
		err = runAgent(args, stderr)
	case "query":
		err = query(args, stdout, stderr)
	case "monitor":
		err = monitorCmd(args, stdout)
	case "install":
		err = install(args, stdout)
	case "version":
		fmt.Fprintf(stdout, "datakit %s\n", agent.Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		err = fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "datakit %s: %v\n\n%s", cmd, err, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "datakit %s: %v\n", cmd, err)
		return 1
	}
}

// flagSet returns a flag set with the common --dir flag.
func flagSet(name string) (*pflag.FlagSet, *string) {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	dir := fs.String("dir", "", "install dir (default $DK_INSTALL_DIR, else the executable's directory)")
	return fs, dir
}

func parse(fs *pflag.FlagSet, args []string) error {
	if err := fs.Parse(args); errors.Is(err, pflag.ErrHelp) {
		return errHelp
	} else if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}

// installDir resolves the install dir: --dir, else $DK_INSTALL_DIR, else the
// directory of the executable.
func installDir(flag string) (string, error) {
	if flag != "" {
		return filepath.Abs(flag)
	}
	if d := os.Getenv("DK_INSTALL_DIR"); d != "" {
		return filepath.Abs(d)
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find install dir: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return "", fmt.Errorf("find install dir: %w", err)
	}
	return filepath.Dir(exe), nil
}

func runAgent(args []string, stderr io.Writer) error {
	fs, dirFlag := flagSet("run")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	dir, err := installDir(*dirFlag)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := log.New(stderr, "", log.LstdFlags|log.Lmicroseconds)
	if err := agent.Run(ctx, agent.Options{Dir: dir, Log: logger}); err != nil {
		return err
	}
	logger.Printf("agent: stopped")
	return nil
}

func query(args []string, stdout, stderr io.Writer) error {
	fs, dirFlag := flagSet("query")
	since := fs.String("since", "5m", "start: a duration before now (5m) or an RFC 3339 time")
	until := fs.String("until", "", "end: a duration before now or an RFC 3339 time (default now)")
	tags := fs.StringArray("tag", nil, "tag filter k=v (repeatable; all must match)")
	category := fs.String("category", "", "category filter, e.g. network")
	limit := fs.Int("limit", 0, fmt.Sprintf("print only the N most recent points (0: %d; at most %d)", api.DefaultQueryLimit, api.MaxQueryLimit))
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: want exactly one MEASUREMENT, got %d arguments", errUsage, fs.NArg())
	}
	measurement := fs.Arg(0)
	var apiTags []string
	for _, t := range *tags {
		k, v, ok := strings.Cut(t, "=")
		if !ok || k == "" {
			return fmt.Errorf("%w: --tag %q: want key=value", errUsage, t)
		}
		apiTags = append(apiTags, k+":"+v)
	}
	if *limit < 0 {
		return fmt.Errorf("%w: --limit %d: want >= 0", errUsage, *limit)
	}
	limitStr := ""
	if *limit > 0 {
		limitStr = fmt.Sprint(*limit)
	}
	q, err := api.ParseQuery(measurement, *since, *until, apiTags, *category, limitStr, time.Now())
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}

	cfg, err := mainConfig(*dirFlag)
	if err != nil {
		return err
	}

	base, token := agentAPI(cfg)
	client := &http.Client{Timeout: 30 * time.Second}
	if agentAnswers(base) {
		v := url.Values{"measurement": {measurement}, "since": {*since}, "until": {*until},
			"category": {*category}, "limit": {limitStr}, "tag": apiTags}
		req, err := http.NewRequest(http.MethodGet, base+"/v1/query?"+v.Encode(), nil)
		if err != nil {
			return err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("query agent at %s: %w", base, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			return fmt.Errorf("query agent at %s: %s: %s", base, resp.Status, strings.TrimSpace(string(body)))
		}
		if _, err = io.Copy(stdout, resp.Body); err != nil {
			return err
		}
		if n := resp.Header.Get(api.TruncatedHeader); n != "" {
			fmt.Fprintf(stderr, "datakit query: only the %s most recent points are shown (--limit, at most %d)\n", n, api.MaxQueryLimit)
		}
		return nil
	}

	st, err := store.Open(cfg.StorePath, store.Options{ReadOnly: true})
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("no store at %s and no agent answering at %s (has the agent run yet?)", cfg.StorePath, base)
	}
	if err != nil {
		return err
	}
	defer st.Close()
	shown := q.Limit
	q.Limit++ // one more says whether older points were left out
	points, err := st.Query(q)
	if err != nil {
		return err
	}
	if len(points) > shown {
		points = points[len(points)-shown:]
		defer fmt.Fprintf(stderr, "datakit query: only the %d most recent points are shown (--limit, at most %d)\n", shown, api.MaxQueryLimit)
	}
	out, err := api.FormatPoints(points)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}

// agentAPI returns the base URL of the API of the agent configured by cfg (wildcard hosts become loopback)
// and the token to send it: $ENV_HTTP_TOKEN if set, else [http_api] token.
// mainConfig reads datakit.conf of the install dir dirFlag names (installDir).
func mainConfig(dirFlag string) (*config.Config, error) {
	dir, err := installDir(dirFlag)
	if err != nil {
		return nil, err
	}
	return config.LoadMain(dir)
}

// agentAPI is the address and token a client uses for the agent: ENV_HTTP_TOKEN over datakit.conf, as the agent.
func agentAPI(cfg *config.Config) (base, token string) {
	token = cfg.Token
	if t, ok := os.LookupEnv("ENV_HTTP_TOKEN"); ok && t != "" {
		token = t
	}
	return "http://" + config.ClientAddr(cfg.Listen), token
}

func monitorCmd(args []string, stdout io.Writer) error {
	fs, dirFlag := flagSet("monitor")
	refresh := fs.Duration("refresh", api.DefaultMonitorWindow, "time between frames, and the window of the points counts (at most 1m)")
	once := fs.Bool("once", false, "print one frame without escape codes and exit (non-zero if the agent does not answer)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *refresh < time.Second {
		return fmt.Errorf("%w: --refresh %s: want at least 1s", errUsage, *refresh)
	}
	cfg, err := mainConfig(*dirFlag)
	if err != nil {
		return err
	}
	base, token := agentAPI(cfg)
	terminal := false
	if f, ok := stdout.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			terminal = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return monitor.Run(ctx, monitor.Options{Base: base, Token: token, Refresh: *refresh, Once: *once,
		Terminal: terminal && !*once, Out: stdout})
}

// agentAnswers reports whether an agent's API answers /v1/ping at base.
func agentAnswers(base string) bool {
	client := &http.Client{Timeout: time.Second}
	resp, err := client.Get(base + "/v1/ping")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func install(args []string, stdout io.Writer) error {
	fs, dirFlag := flagSet("install")
	ebpf := fs.Bool("ebpf", false, "install the eBPF collector into <DIR>/externals/datakit-ebpf")
	from := fs.String("from", "", "collector binary to install (default <DIR>/build/datakit-ebpf)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if !*ebpf {
		return fmt.Errorf("%w: nothing to install (want --ebpf)", errUsage)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	dir, err := installDir(*dirFlag)
	if err != nil {
		return err
	}
	src := *from
	if src == "" {
		src = filepath.Join(dir, "build", "datakit-ebpf")
		if _, err := os.Stat(src); err != nil {
			return fmt.Errorf("%s not found: run `make build` first, or pass --from PATH", src)
		}
	}
	dst := filepath.Join(dir, "externals", "datakit-ebpf")
	msg, err := copyExecutable(src, dst)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, msg)

	results := kernelcheck.Run()
	for _, r := range results {
		fmt.Fprintln(stdout, r)
	}
	if kernelcheck.Failed(results) {
		return errors.New("this kernel lacks a hard requirement of the eBPF collector (see MISSING above)")
	}
	// What will really run: the collector loads every program and says, per plugin and part, whether it
	// takes its preferred hooks, a fallback, or is off, and why.
	fmt.Fprintf(stdout, "\n%s check:\n", dst)
	check := exec.Command(dst, "check")
	check.Stdout, check.Stderr = stdout, stdout
	if err := check.Run(); err != nil {
		return fmt.Errorf("the eBPF collector can run no plugin on this kernel (%v; see above)", err)
	}
	return nil
}

// copyExecutable installs src at dst with mode 0755 through a temporary file
// and an atomic rename, so a running collector keeps its old binary.
func copyExecutable(src, dst string) (string, error) {
	si, err := os.Stat(src)
	if err != nil {
		return "", fmt.Errorf("install source: %w", err)
	}
	if !si.Mode().IsRegular() {
		return "", fmt.Errorf("install source %s: not a regular file", src)
	}
	if di, err := os.Stat(dst); err == nil && os.SameFile(si, di) {
		return fmt.Sprintf("%s is already installed (source and destination are the same file)", dst), nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(dst), err)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", src, err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".datakit-ebpf.tmp-*")
	if err != nil {
		return "", fmt.Errorf("create temporary file next to %s: %w", dst, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return "", fmt.Errorf("copy %s to %s: %w", src, tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return "", fmt.Errorf("chmod %s: %w", tmp.Name(), err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return "", fmt.Errorf("sync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", fmt.Errorf("install %s: %w", dst, err)
	}
	return fmt.Sprintf("installed %s -> %s", src, dst), nil
}

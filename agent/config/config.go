// Package config loads the agent's configuration: conf.d/datakit.conf, every
// input table under conf.d/*/ and ENV_ENABLE_INPUTS, and turns it into
// validated inputs, or errors naming the file, the key and the bad value.
//
// What this agent does not implement but DataKit does (keys of a DataKit
// datakit.conf, DataKit's other inputs) is logged and ignored, so that a
// DataKit conf.d can be used as is; what looks like a misspelling of something
// it does implement is an error.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"dkebpf/agent/sink"
	"dkebpf/inputs"
)

// MainFile is the main config file, relative to the install dir.
const MainFile = "conf.d/datakit.conf"

// Main is conf.d/datakit.conf.
type Main struct {
	Hostname string `toml:"hostname"` // "" = os.Hostname()
	HTTPAPI  struct {
		Listen string `toml:"listen"`
		Token  string `toml:"token"` // required when Listen is not loopback
	} `toml:"http_api"`
	Store struct {
		Path      string `toml:"path"` // relative to the install dir
		MaxSizeMB int    `toml:"max_size_mb"`
		MaxAge    string `toml:"max_age"`
	} `toml:"store"`
	GlobalHostTags map[string]string `toml:"global_host_tags"` // added to every point the API accepts
	Sinks          struct {
		Sink []sink.Config `toml:"sink"` // engines the stored points are forwarded to
	} `toml:"sinks"`
}

// Input is one configured input, ready to run.
type Input struct {
	Name  string       // registered name, e.g. "ebpf"
	File  string       // config file relative to the install dir, or "env ENV_ENABLE_INPUTS"
	Input inputs.Input //

	lines keyLines // of File, to point at a key an error names
}

// errKey returns the key an input's error starts with ("inputs.ebpf.interval: invalid duration ..." →
// "inputs.ebpf.interval", as Initializer asks), or "" when the error does not start with a plain key
// followed by ": " (e.g. "inputs.ebpf.interval (from ENV_INPUT_EBPF_INTERVAL): ...", not from the file).
func errKey(err error) string {
	key, _, ok := strings.Cut(err.Error(), ": ")
	if !ok || strings.ContainsAny(key, " ([") {
		return ""
	}
	return key
}

// Config is the loaded configuration.
type Config struct {
	Dir        string // absolute install dir
	Main       Main
	Hostname   string            // ENV_HOSTNAME (in Load), else hostname, else the machine's
	GlobalTags map[string]string // [global_host_tags], __datakit_hostname / $datakit_hostname replaced by Hostname
	Listen     string            // ENV_HTTP_LISTEN (in Load), else [http_api] listen
	Token      string            // ENV_HTTP_TOKEN (in Load), else [http_api] token; "" = none
	StorePath  string            // absolute
	MaxSize    int64             // bytes
	MaxAge     time.Duration     //
	Inputs     []Input
	InputNames []string // names of Inputs, in order
}

// Options tune Load; zero values use the process environment and log.
type Options struct {
	Lookup func(string) (string, bool) // default os.LookupEnv
	Log    *log.Logger                 // warnings; default log.Default()
}

// LoadMain is LoadMainLog with the standard logger.
func LoadMain(dir string) (*Config, error) {
	return LoadMainLog(dir, log.Default())
}

// LoadMainLog reads conf.d/datakit.conf of dir (defaults when absent) without
// touching inputs or the environment; `datakit query` uses it to find the API
// and the store. Keys this agent does not know (a DataKit datakit.conf has
// many) are logged to logger, one line each, and ignored; bad values of keys
// it knows are errors.
func LoadMainLog(dir string, logger *log.Logger) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("install dir %s: %w", dir, err)
	}
	c := &Config{Dir: abs}
	c.Main.HTTPAPI.Listen = "localhost:9529"
	c.Main.Store.Path = "data/points.db"
	c.Main.Store.MaxSizeMB = 512
	c.Main.Store.MaxAge = "168h"

	data, err := os.ReadFile(filepath.Join(abs, MainFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%s: %w", MainFile, err)
	default:
		md, err := toml.Decode(string(data), &c.Main)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", MainFile, err)
		}
		lines := scanKeyLines(data)
		for _, k := range outermost(md.Undecoded()) {
			logger.Printf("config: %s: %s: unknown %s, ignored%s", MainFile, k, kind(md, k), lines.at(strings.Join(k, ".")))
		}
	}

	m := &c.Main
	c.Listen = m.HTTPAPI.Listen
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, fmt.Errorf("%s: http_api.listen: invalid address %q (want host:port, e.g. \"localhost:9529\")", MainFile, c.Listen)
	}
	if m.Store.Path == "" {
		return nil, fmt.Errorf("%s: store.path: empty (want a file path, e.g. \"data/points.db\")", MainFile)
	}
	c.StorePath = m.Store.Path
	if !filepath.IsAbs(c.StorePath) {
		c.StorePath = filepath.Join(abs, c.StorePath)
	}
	if m.Store.MaxSizeMB <= 0 {
		return nil, fmt.Errorf("%s: store.max_size_mb: invalid value %d (want a positive number of MiB)", MainFile, m.Store.MaxSizeMB)
	}
	c.MaxSize = int64(m.Store.MaxSizeMB) << 20
	if c.MaxAge, err = time.ParseDuration(m.Store.MaxAge); err != nil || c.MaxAge <= 0 {
		return nil, fmt.Errorf("%s: store.max_age: invalid duration %q (want a positive Go duration, e.g. \"168h\")", MainFile, m.Store.MaxAge)
	}
	c.Hostname = m.Hostname
	if c.Hostname == "" {
		if c.Hostname, err = os.Hostname(); err != nil {
			return nil, fmt.Errorf("hostname: %w", err)
		}
	}
	for k, v := range m.GlobalHostTags {
		if k == "" || strings.ContainsAny(k, "=,\n") || strings.ContainsAny(v, "\n") {
			return nil, fmt.Errorf("%s: global_host_tags.%s: invalid tag %q = %q (keys may not be empty or contain = , or a newline)", MainFile, k, k, v)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.GlobalHostTags)) {
		if v := m.GlobalHostTags[k]; v == "__datakit_ip" || v == "$datakit_ip" {
			logger.Printf("config: %s: global_host_tags.%s: %q is not resolved by this agent; the tag is added as written", MainFile, k, v)
		}
	}
	c.resolveGlobalTags()
	c.Token = m.HTTPAPI.Token
	if err := checkToken(c.Token); err != nil {
		return nil, fmt.Errorf("%s: http_api.token: %w", MainFile, err)
	}
	ids := map[string]int{}
	for i := range m.Sinks.Sink {
		sc := &m.Sinks.Sink[i]
		if err := sc.Check(); err != nil {
			return nil, fmt.Errorf("%s: sinks.sink[%d].%w", MainFile, i, err)
		}
		if j, dup := ids[sc.ID]; dup {
			return nil, fmt.Errorf("%s: sinks.sink[%d].id: %q is sinks.sink[%d]'s too (each sink keeps its own cursor, by id)", MainFile, i, sc.ID, j)
		}
		ids[sc.ID] = i
	}
	return c, nil
}

// outermost returns the keys none of whose prefixes is among keys: an unknown table stands for its keys.
func outermost(keys []toml.Key) []toml.Key {
	set := map[string]bool{}
	for _, k := range keys {
		set[strings.Join(k, "\x00")] = true
	}
	var out []toml.Key
next:
	for _, k := range keys {
		for i := 1; i < len(k); i++ {
			if set[strings.Join(k[:i], "\x00")] {
				continue next
			}
		}
		out = append(out, k)
	}
	return out
}

// kind names what k is in a message: "table" or "key".
func kind(md toml.MetaData, k toml.Key) string {
	if t := md.Type(k...); t == "Hash" || t == "ArrayHash" {
		return "table"
	}
	return "key"
}

// checkToken refuses a token that clients could not send in an HTTP header; it never shows the token.
func checkToken(t string) error {
	if strings.IndexFunc(t, func(r rune) bool { return r <= ' ' || r == 0x7f || r > '~' }) >= 0 {
		return errors.New("contains a blank, control or non-ASCII character (want printable ASCII without spaces, e.g. the output of `openssl rand -hex 32`)")
	}
	return nil
}

// hostnamePlaceholders are DataKit's values of a global tag that stand for the agent's host name.
var hostnamePlaceholders = map[string]bool{"__datakit_hostname": true, "$datakit_hostname": true}

func (c *Config) resolveGlobalTags() {
	c.GlobalTags = map[string]string{}
	for k, v := range c.Main.GlobalHostTags {
		if hostnamePlaceholders[v] {
			v = c.Hostname
		}
		c.GlobalTags[k] = v
	}
}

// isLoopback tells whether the host of listen (host:port) is "localhost" or a loopback IP. Wildcards
// ("", 0.0.0.0, ::) and any other name are not: they may be reachable from other hosts.
func isLoopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ClientAddr returns the host:port a local client should dial to reach an
// API listening on listen: wildcard hosts become loopback.
func ClientAddr(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// Load reads the whole configuration of install dir dir and builds every
// configured input. Any error (all are reported, joined) means nothing may start.
func Load(dir string, opts Options) (*Config, error) {
	if opts.Lookup == nil {
		opts.Lookup = os.LookupEnv
	}
	if opts.Log == nil {
		opts.Log = log.Default()
	}
	c, err := LoadMainLog(dir, opts.Log)
	if err != nil {
		return nil, err
	}
	// DataKit's ENV_HOSTNAME names the host, over datakit.conf (on Kubernetes, the node's name).
	if h, ok := opts.Lookup("ENV_HOSTNAME"); ok && h != "" {
		c.Hostname = h
		c.resolveGlobalTags()
	}
	// DataKit's ENV_HTTP_LISTEN sets the API's address over datakit.conf (a DaemonSet picks its port).
	listenFrom := MainFile + ": http_api.listen"
	if l, ok := opts.Lookup("ENV_HTTP_LISTEN"); ok && l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return nil, fmt.Errorf("ENV_HTTP_LISTEN: invalid address %q (want host:port, e.g. \"localhost:9529\")", l)
		}
		c.Listen = l
		listenFrom = "ENV_HTTP_LISTEN"
	}
	if t, ok := opts.Lookup("ENV_HTTP_TOKEN"); ok && t != "" {
		if err := checkToken(t); err != nil {
			return nil, fmt.Errorf("ENV_HTTP_TOKEN: %w", err)
		}
		c.Token = t
	}
	// DataKit's ENV_SINK_<letter>, when any is set, replace datakit.conf's [[sinks.sink]], as DataKit does.
	if sinks, set, err := sink.FromEnv(opts.Lookup); err != nil {
		return nil, err
	} else if set {
		if len(c.Main.Sinks.Sink) > 0 {
			opts.Log.Printf("config: ENV_SINK_* are set: they replace the %d sink(s) of %s", len(c.Main.Sinks.Sink), MainFile)
		}
		c.Main.Sinks.Sink = sinks
	}
	if !isLoopback(c.Listen) && c.Token == "" {
		_, port, _ := net.SplitHostPort(c.Listen)
		return nil, fmt.Errorf("%s %q is not a loopback address: flows and bash history would be readable by anyone who can reach it; "+
			"set http_api.token in %s or ENV_HTTP_TOKEN (clients then send Authorization: Bearer <token> or X-Token: <token>), or listen on localhost:%s",
			listenFrom, c.Listen, MainFile, port)
	}
	env := inputs.Env{InstallDir: c.Dir, APIAddr: ClientAddr(c.Listen), Hostname: c.Hostname, APIToken: c.Token, Log: opts.Log}

	files, err := inputFiles(c.Dir)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, f := range files {
		ins, err := loadInputFile(c.Dir, f, env, opts.Log)
		if err != nil {
			errs = append(errs, err)
		}
		c.Inputs = append(c.Inputs, ins...)
	}
	fromEnv, err := envInputs(c.Inputs, env, opts)
	if err != nil {
		errs = append(errs, err)
	}
	c.Inputs = append(c.Inputs, fromEnv...)

	seen := map[string]string{}
	for _, in := range c.Inputs {
		if _, single := in.Input.(inputs.Singleton); single {
			if prev, dup := seen[in.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: inputs.%s: declared more than once (also in %s); it may be declared only once%s",
					in.File, in.Name, prev, in.lines.at("inputs."+in.Name)))
				continue
			}
			seen[in.Name] = in.File
		}
		if r, ok := in.Input.(inputs.EnvReader); ok {
			if err := r.ReadEnv(opts.Lookup); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", in.File, err))
				continue
			}
		}
		if i, ok := in.Input.(inputs.Initializer); ok {
			if err := i.Init(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w%s", in.File, err, in.lines.at(errKey(err))))
			}
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for _, in := range c.Inputs {
		c.InputNames = append(c.InputNames, in.Name)
	}
	return c, nil
}

// inputFiles returns every *.conf below conf.d/ subdirectories, sorted.
func inputFiles(dir string) ([]string, error) {
	root := filepath.Join(dir, "conf.d")
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == root && errors.Is(err, fs.ErrNotExist) {
				return fs.SkipDir
			}
			return err
		}
		if !d.IsDir() && filepath.Dir(path) != root && strings.HasSuffix(path, ".conf") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list input configs: %w", err)
	}
	sort.Strings(files)
	return files, nil
}

// inputFile is the shape of an input config file.
type inputFile struct {
	Inputs map[string][]toml.Primitive `toml:"inputs"`
}

func loadInputFile(dir, path string, env inputs.Env, logger *log.Logger) ([]Input, error) {
	rel, err := filepath.Rel(dir, path)
	if err != nil {
		rel = path
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	var f inputFile
	md, err := toml.Decode(string(data), &f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	lines := scanKeyLines(data)
	var out []Input
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(f.Inputs)) {
		creator, ok := inputs.Get(name)
		if !ok {
			if err := unknownInput(rel, name, lines.at("inputs."+name), logger); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		for _, prim := range f.Inputs[name] {
			in := creator(env)
			if err := md.PrimitiveDecode(prim, in); err != nil {
				errs = append(errs, fmt.Errorf("%s: inputs.%s: %w", rel, name, err))
				continue
			}
			out = append(out, Input{Name: name, File: rel, Input: in, lines: lines})
		}
		// Keys no field took; an input that decodes its table itself (ebpf) checks its keys in Init.
		for _, k := range outermost(md.Undecoded()) {
			if len(k) > 2 && k[0] == "inputs" && k[1] == name {
				errs = append(errs, fmt.Errorf("%s: %s: unknown %s%s", rel, k, kind(md, k), lines.at(strings.Join(k, "."))))
			}
		}
	}
	for _, k := range outermost(md.Undecoded()) {
		if k[0] == "inputs" {
			continue
		}
		at := lines.at(strings.Join(k, "."))
		if inputs.Closest(k[0], []string{"inputs"}) == "" {
			logger.Printf("config: %s: %s: unknown %s, ignored%s", rel, k, kind(md, k), at)
			continue
		}
		// [[input.ebpf]] and the like: a misspelt [[inputs.<name>]].
		want := "[[inputs.<name>]]"
		if len(k) > 1 {
			name := k[1]
			if _, known := inputs.Get(name); !known {
				if near := inputs.Closest(name, inputs.Names()); near != "" {
					name = near
				}
			}
			want = "[[inputs." + name + "]]"
		}
		errs = append(errs, fmt.Errorf("%s: %s: unknown %s (did you mean %s?)%s", rel, k, kind(md, k), want, at))
	}
	return out, errors.Join(errs...)
}

// unknownInput reports an input name no input is registered under: an error when it looks like a
// misspelling of one that is, else a warning (DataKit has some hundred inputs this agent does not
// implement, and their configs must not stop it).
func unknownInput(file, name, at string, logger *log.Logger) error {
	known := strings.Join(inputs.Names(), ", ")
	if near := inputs.Closest(name, inputs.Names()); near != "" {
		return fmt.Errorf("%s: inputs.%s: unknown input (did you mean %q? known: %s)%s", file, name, near, known, at)
	}
	logger.Printf("config: WARNING: %s: inputs.%s: unknown input, ignored%s: this agent implements only %s, so nothing collects that input's data",
		file, name, at, known)
	return nil
}

// envInputs creates, with defaults, the inputs listed in ENV_ENABLE_INPUTS
// that no config file declares. Unknown names are treated as in files.
func envInputs(declared []Input, env inputs.Env, opts Options) ([]Input, error) {
	v, _ := opts.Lookup("ENV_ENABLE_INPUTS")
	var out []Input
	var errs []error
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		creator, ok := inputs.Get(name)
		if !ok {
			if err := unknownInput("ENV_ENABLE_INPUTS", name, "", opts.Log); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		dup := false
		for _, d := range append(declared, out...) {
			dup = dup || d.Name == name
		}
		if !dup {
			out = append(out, Input{Name: name, File: "env ENV_ENABLE_INPUTS", Input: creator(env)})
		}
	}
	return out, errors.Join(errs...)
}

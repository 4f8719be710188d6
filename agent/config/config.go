// Package config loads the agent's configuration: conf.d/datakit.conf, every
// input table under conf.d/*/ and ENV_ENABLE_INPUTS, and turns it into
// validated inputs, or errors naming the file, the key and the bad value.
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"dkebpf/inputs"
)

// MainFile is the main config file, relative to the install dir.
const MainFile = "conf.d/datakit.conf"

// Main is conf.d/datakit.conf.
type Main struct {
	Hostname string `toml:"hostname"` // "" = os.Hostname()
	HTTPAPI  struct {
		Listen string `toml:"listen"`
	} `toml:"http_api"`
	Store struct {
		Path      string `toml:"path"` // relative to the install dir
		MaxSizeMB int    `toml:"max_size_mb"`
		MaxAge    string `toml:"max_age"`
	} `toml:"store"`
	GlobalHostTags map[string]string `toml:"global_host_tags"` // added to every point the API accepts
}

// Input is one configured input, ready to run.
type Input struct {
	Name  string       // registered name, e.g. "ebpf"
	File  string       // config file relative to the install dir, or "env ENV_ENABLE_INPUTS"
	Input inputs.Input //
}

// Config is the loaded configuration.
type Config struct {
	Dir        string // absolute install dir
	Main       Main
	Hostname   string            // ENV_HOSTNAME (in Load), else hostname, else the machine's
	GlobalTags map[string]string // [global_host_tags], __datakit_hostname replaced by Hostname
	Listen     string            // [http_api] listen
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

// LoadMain reads conf.d/datakit.conf of dir (defaults when absent) without
// touching inputs; `datakit query` uses it to find the API and the store.
func LoadMain(dir string) (*Config, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("install dir %s: %w", dir, err)
	}
	c := &Config{Dir: abs}
	c.Main.HTTPAPI.Listen = "localhost:9529"
	c.Main.Store.Path = "data/points.db"
	c.Main.Store.MaxSizeMB = 512
	c.Main.Store.MaxAge = "168h"

	path := filepath.Join(abs, MainFile)
	md, err := toml.DecodeFile(path, &c.Main)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("%s: %w", MainFile, err)
	default:
		if err := undecoded(md, ""); err != nil {
			return nil, fmt.Errorf("%s: %w", MainFile, err)
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
	c.resolveGlobalTags()
	return c, nil
}

// hostnamePlaceholder is DataKit's value of a global tag that stands for the agent's host name.
const hostnamePlaceholder = "__datakit_hostname"

func (c *Config) resolveGlobalTags() {
	c.GlobalTags = map[string]string{}
	for k, v := range c.Main.GlobalHostTags {
		if v == hostnamePlaceholder {
			v = c.Hostname
		}
		c.GlobalTags[k] = v
	}
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
	c, err := LoadMain(dir)
	if err != nil {
		return nil, err
	}
	// DataKit's ENV_HOSTNAME names the host, over datakit.conf (on Kubernetes, the node's name).
	if h, ok := opts.Lookup("ENV_HOSTNAME"); ok && h != "" {
		c.Hostname = h
		c.resolveGlobalTags()
	}
	// DataKit's ENV_HTTP_LISTEN sets the API's address over datakit.conf (a DaemonSet picks its port).
	if l, ok := opts.Lookup("ENV_HTTP_LISTEN"); ok && l != "" {
		if _, _, err := net.SplitHostPort(l); err != nil {
			return nil, fmt.Errorf("ENV_HTTP_LISTEN: invalid address %q (want host:port, e.g. \"localhost:9529\")", l)
		}
		c.Listen = l
	}
	env := inputs.Env{InstallDir: c.Dir, APIAddr: ClientAddr(c.Listen), Hostname: c.Hostname, Log: opts.Log}

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
	c.Inputs = append(c.Inputs, envInputs(c.Inputs, env, opts)...)

	seen := map[string]string{}
	for _, in := range c.Inputs {
		if _, single := in.Input.(inputs.Singleton); single {
			if prev, dup := seen[in.Name]; dup {
				errs = append(errs, fmt.Errorf("%s: inputs.%s: declared more than once (also in %s); it may be declared only once", in.File, in.Name, prev))
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
				errs = append(errs, fmt.Errorf("%s: %w", in.File, err))
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
	var f inputFile
	md, err := toml.DecodeFile(path, &f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", rel, err)
	}
	var out []Input
	var errs []error
	names := make([]string, 0, len(f.Inputs))
	for name := range f.Inputs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		creator, ok := inputs.Get(name)
		if !ok {
			logger.Printf("config: %s: inputs.%s: unknown input, ignored (known: %s)", rel, name, strings.Join(inputs.Names(), ", "))
			continue
		}
		for _, prim := range f.Inputs[name] {
			in := creator(env)
			if err := md.PrimitiveDecode(prim, in); err != nil {
				errs = append(errs, fmt.Errorf("%s: inputs.%s: %w", rel, name, err))
				continue
			}
			out = append(out, Input{Name: name, File: rel, Input: in})
		}
		if err := undecoded(md, "inputs."+name+"."); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", rel, err))
		}
	}
	for _, k := range md.Undecoded() {
		if len(k) > 0 && k[0] != "inputs" {
			logger.Printf("config: %s: %s: unknown key, ignored", rel, k)
		}
	}
	return out, errors.Join(errs...)
}

// undecoded returns an error naming the keys with prefix that no field took.
func undecoded(md toml.MetaData, prefix string) error {
	var bad []string
	for _, k := range md.Undecoded() {
		if s := k.String(); strings.HasPrefix(s, prefix) {
			bad = append(bad, s)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%s: unknown key", strings.Join(bad, ", "))
}

// envInputs creates, with defaults, the inputs listed in ENV_ENABLE_INPUTS
// that no config file declares.
func envInputs(declared []Input, env inputs.Env, opts Options) []Input {
	v, _ := opts.Lookup("ENV_ENABLE_INPUTS")
	var out []Input
	for _, name := range strings.Split(v, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		creator, ok := inputs.Get(name)
		if !ok {
			opts.Log.Printf("config: ENV_ENABLE_INPUTS: unknown input %q, ignored (known: %s)", name, strings.Join(inputs.Names(), ", "))
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
	return out
}

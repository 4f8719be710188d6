// Package ebpf is the agent's `ebpf` input ([[inputs.ebpf]]): it accepts
// DataKit's configuration keys and ENV_INPUT_EBPF_* variables, validates
// them, builds the datakit-ebpf command line in DataKit's order, and runs the
// collector under the external supervisor.
package ebpf

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"dkebpf/inputs"
	"dkebpf/inputs/external"
	"dkebpf/options"
)

// Name is the input's registered name.
const Name = "ebpf"

//go:embed ebpf.conf.sample
var sampleConfig string

func init() {
	inputs.Add(Name, func(env inputs.Env) inputs.Input { return New(env) })
}

// Input is [[inputs.ebpf]]. Its keys are the rows of options.Table that have one: each value is kept as the
// flag words the collector will be given, and checked with the collector's own parser.
type Input struct {
	env     inputs.Env
	raw     map[string]any      // the TOML table as decoded
	words   map[string][]string // key → flag words, from the file, then ENV
	fromEnv map[string]string   // key → the env var that set it
	values  map[string]any      // key → parsed value, after Init (agent defaults included)
	path    string              // resolved executable
	grace   time.Duration
	sup     *external.Supervisor
}

// New returns an input holding DataKit's defaults.
func New(env inputs.Env) *Input {
	return &Input{env: env, raw: map[string]any{}, words: map[string][]string{}, fromEnv: map[string]string{}}
}

// UnmarshalTOML keeps the decoded table; Init converts and checks it, naming each key.
func (i *Input) UnmarshalTOML(data any) error {
	m, ok := data.(map[string]any)
	if !ok {
		return fmt.Errorf("want a table, got %T", data)
	}
	i.raw = m
	return nil
}

// SampleConfig returns the shipped conf.d/samples/ebpf.conf.sample.
func (*Input) SampleConfig() string { return sampleConfig }

// Singleton marks ebpf as declarable once.
func (*Input) Singleton() {}

// ReadEnv applies ENV_INPUT_EBPF_* overrides (DataKit's ReadEnv, and the legacy names), each row's variables
// in order, the first one set winning.
func (i *Input) ReadEnv(lookup func(string) (string, bool)) error {
	for n := range options.Table {
		o := &options.Table[n]
		for _, name := range o.Env {
			v, ok := lookup(name)
			if !ok {
				continue
			}
			words, err := o.FromEnv(v)
			switch {
			case err != nil && o.BadEnvIgnored:
				i.env.Log.Printf("ebpf: %s: %v, ignored", name, err)
			case err != nil:
				return fmt.Errorf("%s: %v", name, err)
			default:
				i.words[o.Key] = words
				i.fromEnv[o.Key] = name
			}
			break
		}
	}
	return nil
}

// keyErr names a key (and the env var that set it) in a config error.
func (i *Input) keyErr(key string, err error) error {
	name := "inputs.ebpf." + key
	var ke *options.KeyError
	if errors.As(err, &ke) {
		name, err = name+ke.Sub, ke.Err
	}
	if e, ok := i.fromEnv[key]; ok {
		name += " (from " + e + ")"
	}
	return fmt.Errorf("%s: %w", name, err)
}

// Init converts and checks every key as the collector will parse it, fills the agent's defaults and prepares
// the supervisor; after it succeeds, Command and State may be used.
func (i *Input) Init() error {
	keys := slices.Sorted(maps.Keys(i.raw))
	for _, k := range keys {
		o := options.ByKey(k)
		if o == nil {
			return fmt.Errorf("inputs.ebpf.%s: unknown key%s", k, didYouMean(k))
		}
		if _, fromEnv := i.fromEnv[k]; fromEnv {
			continue
		}
		words, err := o.FromTOML(i.raw[k])
		if err != nil {
			return i.keyErr(k, err)
		}
		i.words[k] = words
	}
	// DataKit: httpflow is on unless either L7 list is given.
	if _, on := i.words["l7net_enabled"]; !on {
		if _, off := i.words["l7net_disabled"]; !off {
			i.words["l7net_enabled"] = []string{"httpflow"}
		}
	}
	i.values = map[string]any{}
	for n := range options.Table {
		o := &options.Table[n]
		if o.Key == "" {
			continue
		}
		words := i.words[o.Key]
		if isUnset(o, words) && o.AgentDefault != "" {
			words = []string{o.AgentDefault}
			i.words[o.Key] = words
		}
		if isUnset(o, words) {
			continue
		}
		v, err := o.Value(words)
		if err != nil {
			return i.keyErr(o.Key, err)
		}
		i.values[o.Key] = v
	}
	if !i.values["netlog_metric_only"].(bool) { // DataKit: logs as well as metrics
		i.values["netlog_log"] = true
	}
	if i.grace = i.values["grace_period"].(time.Duration); i.grace <= 0 {
		return i.keyErr("grace_period", fmt.Errorf("%q: want a positive duration, e.g. \"10s\"", i.grace))
	}
	i.path, _ = i.values["cmd"].(string)
	switch {
	case i.path == "":
		i.path = filepath.Join(i.env.InstallDir, "externals", "datakit-ebpf")
	case !filepath.IsAbs(i.path):
		i.path = filepath.Join(i.env.InstallDir, i.path)
	}

	path, args, env := i.Command()
	i.sup = external.New(external.Config{
		Name:        Name,
		Path:        path,
		Args:        args,
		Env:         env,
		InstallHint: "datakit install --ebpf",
		UnfitExit:   options.ExitUnfit,
		GracePeriod: i.grace,
		Log:         i.env.Log,
	})
	return nil
}

// didYouMean suggests the key that an unknown key k is most likely a misspelling of.
func didYouMean(k string) string {
	var keys []string
	for n := range options.Table {
		if key := options.Table[n].Key; key != "" {
			keys = append(keys, key)
		}
	}
	if near := inputs.Closest(k, keys); near != "" {
		return fmt.Sprintf(" (did you mean %q?)", near)
	}
	return ""
}

// isUnset tells whether words leave a key at the collector's default: absent, empty, or the row's Unset value.
func isUnset(o *options.Option, words []string) bool {
	return len(words) == 0 || (len(words) == 1 && (words[0] == "" || words[0] == o.Unset))
}

var hostnameArg = regexp.MustCompile(`--hostname`)

// SpoolDir is where the collector keeps the points the agent did not take, relative to the install dir
// (DKE_SPOOL_DIR).
const SpoolDir = "data/ebpf-spool"

// Command returns the collector's executable, arguments (starting with "run") and extra environment, in
// DataKit's order: the table's. The environment ends with DKE_SPOOL_DIR, DKE_API_TOKEN (when the agent's
// API wants a token) and then the input's envs, which may override them.
func (i *Input) Command() (path string, args, env []string) {
	user, ok := i.words["args"] // absent: where this agent listens; [] stays empty
	if !ok {
		user = []string{"--datakit-apiserver", i.env.APIAddr}
	}
	args = append([]string{"run"}, user...)
	if !slices.ContainsFunc(user, hostnameArg.MatchString) && i.env.Hostname != "" {
		args = append(args, "--hostname", i.env.Hostname)
	}
	for n := range options.Table {
		o := &options.Table[n]
		v, set := i.values[o.Key]
		if !set || !i.passes(o) {
			continue
		}
		switch {
		case o.ChildEnv != "":
			env = append(env, o.ChildEnv+"="+strings.Join(i.words[o.Key], ","))
		case o.Kind == options.Bool:
			if v.(bool) {
				args = append(args, "--"+o.Flag)
			}
		default:
			for _, w := range i.words[o.Key] {
				args = append(args, "--"+o.Flag, w)
			}
		}
	}
	env = append(env, "DKE_SPOOL_DIR="+filepath.Join(i.env.InstallDir, SpoolDir))
	if i.env.APIToken != "" {
		env = append(env, "DKE_API_TOKEN="+i.env.APIToken)
	}
	env = append(env, i.strings("envs")...)
	return i.path, args, env
}

// passes tells whether a key reaches the collector: it has a flag or a child variable, and DataKit's rules
// for keys that depend on others allow it.
func (i *Input) passes(o *options.Option) bool {
	switch o.Key {
	case "l7net_disabled": // only when l7net_enabled is empty
		return len(i.strings("l7net_enabled")) == 0
	case "sampling_rate_pts_per_min": // only without sampling_rate
		return i.values["sampling_rate"] == nil
	case "workload_label_prefix": // only with workload_labels
		return len(i.strings("workload_labels")) > 0
	}
	return o.Flag != "" || o.ChildEnv != ""
}

func (i *Input) strings(key string) []string {
	l, _ := i.values[key].([]string)
	return l
}

// Unsupported returns the keys set to a value other than the agent's default whose feature the collector
// does not build yet.
func (i *Input) Unsupported() []string {
	var keys []string
	for n := range options.Table {
		o := &options.Table[n]
		if o.Key == "" || o.NotYet == "" {
			continue
		}
		words, set := i.words[o.Key]
		if set && !isUnset(o, words) && strings.Join(words, "") != o.AgentDefault {
			keys = append(keys, o.Key)
		}
	}
	return keys
}

// State reports the supervised collector (for GET /v1/externals).
func (i *Input) State() external.State { return i.sup.State() }

// Run supervises the collector until ctx is cancelled.
func (i *Input) Run(ctx context.Context) error {
	for _, k := range i.Unsupported() {
		i.env.Log.Printf("ebpf: %s is accepted but not yet supported (%s is not built yet)", k, options.ByKey(k).NotYet)
	}
	if !i.values["daemon"].(bool) {
		i.env.Log.Printf("ebpf: daemon = false is ignored: the collector always runs as a long-lived child")
	}
	path, args, _ := i.Command()
	i.env.Log.Printf("ebpf: command: %s %s", path, strings.Join(args, " "))
	return i.sup.Run(ctx)
}

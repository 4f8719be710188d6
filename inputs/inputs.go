// Package inputs is the parent agent's inputs framework: the Input interface
// and a registry that input packages fill from init(), as in telegraf.
package inputs

import (
	"context"
	"log"
	"sort"
	"sync"
)

// Input is one configured data source run by the agent.
type Input interface {
	// Run blocks until ctx is cancelled or the input gives up.
	Run(ctx context.Context) error
}

// Env is what an input learns about the agent it runs in.
type Env struct {
	InstallDir string      // absolute install directory (DIR)
	APIAddr    string      // host:port a local client should use to reach this agent's API
	Hostname   string      // the agent's host name
	Log        *log.Logger // the agent's log
}

// Creator returns a new input holding its defaults; the agent then decodes
// the input's TOML table into it.
type Creator func(env Env) Input

// Initializer is implemented by inputs that validate their configuration
// after decoding and env overrides. Errors name the key, e.g.
// "inputs.ebpf.interval: invalid duration \"abc\"".
type Initializer interface {
	Init() error
}

// EnvReader is implemented by inputs that take overrides from environment
// variables (DataKit's ENV_INPUT_<NAME>_*). lookup is os.LookupEnv in the agent.
type EnvReader interface {
	ReadEnv(lookup func(string) (string, bool)) error
}

// Sampler is implemented by inputs that ship a sample configuration.
type Sampler interface {
	SampleConfig() string
}

// Singleton is implemented by inputs that may be declared only once.
type Singleton interface {
	Singleton()
}

var (
	mu       sync.Mutex
	registry = map[string]Creator{}
)

// Add registers an input creator under name; call it from init().
func Add(name string, c Creator) {
	mu.Lock()
	defer mu.Unlock()
	registry[name] = c
}

// Get returns the creator registered under name.
func Get(name string) (Creator, bool) {
	mu.Lock()
	defer mu.Unlock()
	c, ok := registry[name]
	return c, ok
}

// Names returns the registered input names, sorted.
func Names() []string {
	mu.Lock()
	defer mu.Unlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Package inputs is the parent agent's inputs framework: the Input interface
// and a registry that input packages fill from init(), as in telegraf.
package inputs

import (
	"context"
	"log"
	"sort"
	"strings"
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
	APIToken   string      // token clients of this agent's API must send ("" = none required)
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

// Closest returns the name of known that name is most likely a misspelling of, or "" when none is close:
// at most one edit (insertion, deletion, substitution or swap of neighbours, ignoring case) from a known
// name of up to 5 characters, two from a longer one. The bound is tight on short names so that DataKit's
// own short input names (cpu, mem, net, ...) are not taken for misspellings of ours.
func Closest(name string, known []string) string {
	best, bestD := "", -1
	for _, k := range known {
		limit := 1
		if len(k) > 5 {
			limit = 2
		}
		d := editDistance(strings.ToLower(name), strings.ToLower(k))
		if d <= limit && (bestD < 0 || d < bestD) {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance of a and b (Levenshtein plus the swap of two
// neighbouring characters as one edit), over bytes.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

package bpf

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

// Test-only knobs: the fault tests (tests/integration/faults_bpf_test.go) shrink a map so that a burst of
// their own traffic overflows it, and then check that every record or entry the kernel could not keep is
// counted. No shipped configuration sets them. Each is a list "<map>=<n>[,<map>=<n>...]" applied to every
// object that has a map of that name, before the object is loaded.
const (
	// ringBytesEnv sets the size in bytes of ring buffers (a power of two multiple of the page size).
	ringBytesEnv = "DKE_TEST_RINGBUF_BYTES"
	// mapEntriesEnv sets max_entries of other maps (hash maps: how many entries they hold).
	mapEntriesEnv = "DKE_TEST_MAP_ENTRIES"
)

// parseSizes reads a knob's "<map>=<n>[,...]".
func parseSizes(env, spec string) (map[string]uint32, error) {
	out := map[string]uint32{}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, num, ok := strings.Cut(item, "=")
		n, err := strconv.ParseUint(strings.TrimSpace(num), 0, 32)
		if !ok || strings.TrimSpace(name) == "" || err != nil || n == 0 {
			return nil, fmt.Errorf("%s: %q is not <map>=<n> with n > 0", env, item)
		}
		out[strings.TrimSpace(name)] = uint32(n)
	}
	return out, nil
}

// checkRingBytes says whether n can size a ring buffer: a power of two multiple of the page size.
func checkRingBytes(n uint32, page int) error {
	if n < uint32(page) || n%uint32(page) != 0 || n&(n-1) != 0 {
		return fmt.Errorf("%d bytes: a ring buffer's size is a power of two multiple of the page size (%d)", n, page)
	}
	return nil
}

// applyTestSizes resizes the maps of an opened, not yet loaded, object as the test-only knobs say. A
// ring buffer named in DKE_TEST_MAP_ENTRIES, or another map named in DKE_TEST_RINGBUF_BYTES, is an error;
// a name this object lacks is left to the objects that have it.
func applyTestSizes(name string, m *libbpfgo.Module) error {
	for _, env := range []string{ringBytesEnv, mapEntriesEnv} {
		spec := os.Getenv(env)
		if spec == "" {
			continue
		}
		sizes, err := parseSizes(env, spec)
		if err != nil {
			return err
		}
		for mapName, n := range sizes {
			bm, err := m.GetMap(mapName)
			if err != nil {
				continue // another object's map
			}
			ring := bm.Type() == libbpfgo.MapTypeRingbuf
			if ring != (env == ringBytesEnv) {
				return fmt.Errorf("%s: map %s of %s is a %s", env, mapName, name, bm.Type())
			}
			if ring {
				if err := checkRingBytes(n, os.Getpagesize()); err != nil {
					return fmt.Errorf("%s: map %s: %w", env, mapName, err)
				}
			}
			if err := bm.SetMaxEntries(n); err != nil {
				return fmt.Errorf("%s: resize map %s of %s to %d: %w", env, mapName, name, n, err)
			}
			fmt.Fprintf(os.Stderr, "datakit-ebpf: test knob %s: map %s of %s sized %d\n", env, mapName, name, n)
		}
	}
	return nil
}

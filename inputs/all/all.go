// Package all links every input of the parent agent into the binary by
// importing it for its init() registration.
package all

import (
	_ "dkebpf/inputs/ebpf" // [[inputs.ebpf]]
)

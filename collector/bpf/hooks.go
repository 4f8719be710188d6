package bpf

import (
	"fmt"
	"os"
	"strings"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

// Kind is how a program attaches.
type Kind int

const (
	TPBTF         Kind = iota // BTF-typed raw tracepoint: needs no tracefs
	Kprobe                    // kprobe on a kernel function (kernels built with kprobes)
	MapIter                   // iterator over a map's elements, run on demand
	Iter                      // iterator over a kernel object (iter/tcp), run on demand
	CgroupIngress             // cgroup_skb on the cgroup v2 root
	CgroupEgress
)

// Hook is one program of an object and where it attaches. Hooks sharing a Part are needed together:
// if a Required hook of a part cannot attach, the whole part is off and the reason is reported.
// Hooks of one Group are alternatives: the hooks with the lowest Alt that this kernel has are used
// (Alt 0 is preferred), the others are not loaded.
type Hook struct {
	Prog     string
	Kind     Kind
	Target   string // tracepoint or function name, or the map an iterator walks
	Part     string
	Required bool
	Since    string // first kernel with this hook, for the message when it is missing
	Group    string
	Alt      int
}

func (h Hook) String() string {
	switch h.Kind {
	case TPBTF:
		return "tp_btf/" + h.Target
	case Kprobe:
		return "kprobe/" + h.Target
	case MapIter:
		return "iter/bpf_map_elem(" + h.Target + ")"
	case Iter:
		return "iter/" + h.Target
	case CgroupIngress:
		return "cgroup_skb/ingress"
	default:
		return "cgroup_skb/egress"
	}
}

// HookStatus says whether a hook attached, and why not.
type HookStatus struct {
	Hook
	Err error
}

// attachment is the set of hooks of one loaded object.
type attachment struct {
	statuses  []HookStatus
	off       map[string]string // part -> reason it is off
	fallbacks map[string]string // part -> which preferred hooks a fallback replaces, and why
	unused    map[string]bool   // programs of alternatives not chosen
	links     map[string]*libbpfgo.BPFLink
	iters     map[string]*iterLink
}

// available says, before loading, whether this kernel offers a hook: the verifier rejects a whole
// object if one tp_btf or kprobe target is missing.
func available(h Hook) error {
	switch h.Kind {
	case TPBTF:
		ok, err := kernelHasType("btf_trace_"+h.Target, btfKindTypedef)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w (needs Linux %s)", ErrNotSupported, h.Since)
		}
	case Kprobe:
		if _, err := os.Stat("/sys/bus/event_source/devices/kprobe"); err != nil {
			return fmt.Errorf("%w: kernel built without kprobes", ErrNotSupported)
		}
		ok, err := kernelHasType(h.Target, btfKindFunc)
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: no function %s", ErrNotSupported, h.Target)
		}
	}
	return nil
}

// preload chooses among alternatives and disables, before the object is loaded, every program that
// will not be attached.
func preload(m *libbpfgo.Module, hooks []Hook) (*attachment, error) {
	a := &attachment{off: map[string]string{}, fallbacks: map[string]string{}, unused: map[string]bool{},
		links: map[string]*libbpfgo.BPFLink{}, iters: map[string]*iterLink{}}
	errs := map[string]error{}
	defer releaseKernelBTF()
	for _, h := range hooks {
		if err := available(h); err != nil {
			errs[h.Prog] = err
		}
	}
	chosen := chooseAlternatives(hooks, errs)
	replaced := map[string][]string{} // part -> preferred hooks a fallback stands in for
	var why error
	for _, h := range hooks {
		if h.Group != "" && h.Alt != chosen[h.Group] {
			if chosen[h.Group] >= 0 || h.Alt != 0 {
				a.unused[h.Prog] = true // a fallback, or a preferred hook replaced by one
				if h.Alt == 0 {
					replaced[h.Part] = append(replaced[h.Part], h.String())
					why = cmpOr(why, errs[h.Prog])
				}
				continue
			}
		}
		if errs[h.Prog] != nil {
			a.fail(h, errs[h.Prog])
		}
	}
	for part, hs := range replaced {
		a.fallbacks[part] = fmt.Sprintf(" (fallback for %s: %v)", strings.Join(hs, ", "), why)
	}
	for _, h := range hooks {
		if !a.unused[h.Prog] && errs[h.Prog] == nil {
			continue
		}
		p, err := m.GetProgram(h.Prog)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", h.Prog, err)
		}
		if err := p.SetAutoload(false); err != nil {
			return nil, fmt.Errorf("disable program %s: %w", h.Prog, err)
		}
	}
	return a, nil
}

// chooseAlternatives returns, per group, the lowest Alt whose hooks are all available, or -1.
func chooseAlternatives(hooks []Hook, errs map[string]error) map[string]int {
	bad := map[string]map[int]bool{}
	alts := map[string]map[int]bool{}
	for _, h := range hooks {
		if h.Group == "" {
			continue
		}
		if alts[h.Group] == nil {
			alts[h.Group], bad[h.Group] = map[int]bool{}, map[int]bool{}
		}
		alts[h.Group][h.Alt] = true
		if errs[h.Prog] != nil {
			bad[h.Group][h.Alt] = true
		}
	}
	chosen := map[string]int{}
	for g, set := range alts {
		chosen[g] = -1
		for alt := 0; alt <= len(set)+1; alt++ {
			if set[alt] && !bad[g][alt] {
				chosen[g] = alt
				break
			}
		}
	}
	return chosen
}

func (a *attachment) fail(h Hook, err error) {
	a.statuses = append(a.statuses, HookStatus{Hook: h, Err: err})
	if h.Required {
		if _, off := a.off[h.Part]; !off {
			a.off[h.Part] = fmt.Sprintf("%s: %v", h, err)
		}
	}
}

func (a *attachment) failed(prog string) bool {
	for _, st := range a.statuses {
		if st.Prog == prog && st.Err != nil {
			return true
		}
	}
	return false
}

// attach attaches every hook not already ruled out. cgroupRoot is the cgroup v2 mount for cgroup hooks.
func (a *attachment) attach(m *libbpfgo.Module, hooks []Hook, cgroupRoot func() (string, error)) {
	for _, h := range hooks {
		if a.unused[h.Prog] || a.failed(h.Prog) {
			continue
		}
		if _, off := a.off[h.Part]; off {
			a.statuses = append(a.statuses, HookStatus{Hook: h, Err: fmt.Errorf("part %s is off", h.Part)})
			continue
		}
		if err := a.attachOne(m, h, cgroupRoot); err != nil {
			a.fail(h, err)
			continue
		}
		a.statuses = append(a.statuses, HookStatus{Hook: h})
	}
	// A part that lost a required hook after some of its hooks attached is off entirely.
	for _, st := range a.statuses {
		if _, off := a.off[st.Part]; off {
			if l := a.links[st.Prog]; l != nil {
				l.Destroy()
				delete(a.links, st.Prog)
			}
			if l := a.iters[st.Prog]; l != nil {
				l.Destroy()
				delete(a.iters, st.Prog)
			}
		}
	}
}

func (a *attachment) attachOne(m *libbpfgo.Module, h Hook, cgroupRoot func() (string, error)) error {
	p, err := m.GetProgram(h.Prog)
	if err != nil {
		return fmt.Errorf("program %s: %w", h.Prog, err)
	}
	var link *libbpfgo.BPFLink
	switch h.Kind {
	case TPBTF:
		link, err = p.AttachGeneric()
	case Kprobe:
		link, err = p.AttachKprobe(h.Target)
	case MapIter, Iter:
		mapFD := -1
		if h.Kind == MapIter {
			mp, err := m.GetMap(h.Target)
			if err != nil {
				return fmt.Errorf("map %s: %w", h.Target, err)
			}
			mapFD = mp.FileDescriptor()
		}
		it, err := newIterLink(p.FileDescriptor(), mapFD)
		if err != nil {
			return err
		}
		a.iters[h.Prog] = it
		return nil
	default:
		var root string
		if root, err = cgroupRoot(); err == nil {
			link, err = p.AttachCgroup(root)
		}
	}
	if err != nil {
		return err
	}
	a.links[h.Prog] = link
	return nil
}

// Report is one line per part: each hook and whether it attached, or why the part is off.
func (a *attachment) Report(plugin string) []string {
	parts := []string{}
	byPart := map[string][]string{}
	for _, st := range a.statuses {
		if _, seen := byPart[st.Part]; !seen {
			parts = append(parts, st.Part)
		}
		state := "attached"
		if st.Err != nil {
			state = "FAILED (" + st.Err.Error() + ")"
			if !st.Required {
				state = "missing, optional (" + st.Err.Error() + ")"
			}
		}
		byPart[st.Part] = append(byPart[st.Part], st.Hook.String()+" "+state)
	}
	var lines []string
	for _, p := range parts {
		head := fmt.Sprintf("%s/%s: on", plugin, p)
		if reason, off := a.off[p]; off {
			head = fmt.Sprintf("%s/%s: OFF, %s", plugin, p, reason)
		}
		lines = append(lines, head+"; hooks: "+strings.Join(byPart[p], ", ")+a.fallbacks[p])
	}
	return lines
}

// On says whether a part has all its required hooks.
func (a *attachment) On(part string) bool { _, off := a.off[part]; return !off }

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

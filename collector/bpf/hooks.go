package bpf

import (
	"fmt"
	"strings"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

// Kind is how a program attaches.
type Kind int

const (
	TPBTF         Kind = iota // BTF-typed raw tracepoint: needs no tracefs
	MapIter                   // iterator over a map's elements, run on demand
	Iter                      // iterator over a kernel object (iter/tcp), run on demand
	CgroupIngress             // cgroup_skb on the cgroup v2 root
	CgroupEgress
)

// Hook is one program of an object and where it attaches. Hooks sharing a Part are needed together:
// if a Required hook of a part cannot attach, the whole part is off and the reason is reported.
type Hook struct {
	Prog     string
	Kind     Kind
	Target   string // tracepoint name, or the map an iterator walks
	Part     string
	Required bool
	Since    string // first kernel with this hook, for the message when it is missing
}

func (h Hook) String() string {
	switch h.Kind {
	case TPBTF:
		return "tp_btf/" + h.Target
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
	statuses []HookStatus
	off      map[string]string // part -> reason it is off
	links    map[string]*libbpfgo.BPFLink
	iters    map[string]*iterLink
}

// preload disables the programs whose tracepoint this kernel lacks, before the object is loaded: the
// verifier rejects a whole object if one tp_btf target is missing.
func preload(m *libbpfgo.Module, hooks []Hook) (*attachment, error) {
	a := &attachment{off: map[string]string{}, links: map[string]*libbpfgo.BPFLink{}, iters: map[string]*iterLink{}}
	for _, h := range hooks {
		if h.Kind != TPBTF {
			continue
		}
		ok, err := kernelHasTracepoint(h.Target)
		if err != nil {
			return nil, err
		}
		if !ok {
			a.fail(h, fmt.Errorf("%w (needs Linux %s)", ErrNotSupported, h.Since))
		}
	}
	for _, st := range a.statuses {
		p, err := m.GetProgram(st.Prog)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", st.Prog, err)
		}
		if err := p.SetAutoload(false); err != nil {
			return nil, fmt.Errorf("disable program %s: %w", st.Prog, err)
		}
	}
	return a, nil
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
		if a.failed(h.Prog) {
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
		lines = append(lines, head+"; hooks: "+strings.Join(byPart[p], ", "))
	}
	return lines
}

// On says whether a part has all its required hooks.
func (a *attachment) On(part string) bool { _, off := a.off[part]; return !off }

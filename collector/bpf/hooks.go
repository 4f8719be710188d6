package bpf

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

// Kind is how a program attaches.
type Kind int

const (
	TPBTF         Kind = iota // BTF-typed raw tracepoint: needs no tracefs
	RawTP                     // raw tracepoint: needs no tracefs, reads through helpers
	Tracepoint                // classic tracepoint (Target "category/name"): needs tracefs
	Kprobe                    // kprobe on a kernel function (kernels built with kprobes)
	Uprobe                    // uprobe or uretprobe, attached later per file by the plugin
	MapIter                   // iterator over a map's elements, run on demand
	Iter                      // iterator over a kernel object (iter/tcp), run on demand
	TestRun                   // raw_tp program never attached: the collector runs it (BPF_PROG_TEST_RUN)
	CgroupIngress             // cgroup_skb on the cgroup v2 root
	CgroupEgress
)

// Hook is one program of an object and where it attaches. Hooks sharing a Part are needed together:
// if a Required hook of a part cannot load or attach, the whole part is off and the reason is reported.
// Hooks of one Group are alternatives, a ladder: the hooks with the lowest Alt that this kernel offers
// and accepts are used (Alt 0 is preferred), the others are not loaded.
type Hook struct {
	Prog     string
	Kind     Kind
	Target   string // tracepoint or function name, the map an iterator walks, the symbol a uprobe takes
	Part     string
	Required bool
	Since    string // first kernel with this hook, for the message when it is missing
	Group    string
	Alt      int
}

// Name is the hook as DKEBPF_REFUSE_HOOKS and the reports name it, like a libbpf section:
// "tp_btf/inet_sock_set_state", "iter/bpf_map_elem", "raw_tp" (a program the collector runs).
func (h Hook) Name() string {
	switch h.Kind {
	case TPBTF:
		return "tp_btf/" + h.Target
	case RawTP:
		return "raw_tp/" + h.Target
	case Tracepoint:
		return "tracepoint/" + h.Target
	case Kprobe:
		return "kprobe/" + h.Target
	case Uprobe:
		return "uprobe/" + h.Target
	case MapIter:
		return "iter/bpf_map_elem"
	case Iter:
		return "iter/" + h.Target
	case TestRun:
		return "raw_tp"
	case CgroupIngress:
		return "cgroup_skb/ingress"
	default:
		return "cgroup_skb/egress"
	}
}

func (h Hook) String() string {
	switch h.Kind {
	case MapIter:
		return h.Name() + "(" + h.Target + ")"
	case TestRun:
		return "raw_tp(" + h.Prog + ", run by the collector)"
	}
	return h.Name()
}

// refuseEnv names hooks the collector treats exactly as a kernel that refuses them: their programs are
// handed to the kernel in a form it refuses, so the load fails and the fallback logic runs as it would
// on such a kernel. Comma-separated Hook.Name()s, program names, or "kind/*" (every tp_btf/...). Tests only.
const refuseEnv = "DKEBPF_REFUSE_HOOKS"

// forcedRefusal says whether DKEBPF_REFUSE_HOOKS (spec) names h.
func forcedRefusal(spec string, h Hook) bool {
	for _, e := range strings.Split(spec, ",") {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		if kind, ok := strings.CutSuffix(e, "/*"); ok {
			if before, _, _ := strings.Cut(h.Name(), "/"); before == kind {
				return true
			}
			continue
		}
		if e == h.Name() || e == h.Prog {
			return true
		}
	}
	return false
}

// errPartOff: a hook not attached because its part lost another required hook.
var errPartOff = errors.New("is off")

// HookStatus says whether a hook attached, and why not.
type HookStatus struct {
	Hook
	Err error
}

// attachment is the set of hooks of one loaded object.
type attachment struct {
	statuses  []HookStatus
	off       map[string]string   // part -> reason it is off
	fallbacks map[string][]string // part -> preferred hooks a fallback stands in for, each with its reason
	unused    map[string]bool     // programs of alternatives not chosen
	ruledOut  map[string]bool     // programs not loaded: missing from this kernel, or refused
	refused   map[string]error    // programs the kernel (or DKEBPF_REFUSE_HOOKS) refused to load
	parts     []string            // in the order of the hook table
	notes     map[string]string   // part -> what it does instead, or loses, on this kernel
	links     map[string]*libbpfgo.BPFLink
	iters     map[string]*iterLink
}

// available says, before loading, whether this kernel offers a hook: the verifier rejects a whole
// object if one tp_btf or kprobe target is missing.
func available(h Hook) error {
	switch h.Kind {
	case TPBTF, RawTP, Tracepoint:
		// Every tracepoint, raw or classic, has a btf_trace_<name> typedef in the kernel's BTF.
		name := h.Target[strings.LastIndex(h.Target, "/")+1:]
		ok, err := kernelHasType("btf_trace_"+name, btfKindTypedef)
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
	case Uprobe:
		if _, err := os.Stat("/sys/bus/event_source/devices/uprobe"); err != nil {
			return fmt.Errorf("%w: kernel built without uprobes", ErrNotSupported)
		}
	}
	return nil
}

// availability says, per program, why this kernel does not offer its hook (nil: it does).
func availability(hooks []Hook) map[string]error {
	defer releaseKernelBTF()
	missing := map[string]error{}
	for _, h := range hooks {
		missing[h.Prog] = available(h)
	}
	return missing
}

// preload chooses among alternatives and disables, before the object is loaded, every program that
// will not be attached. missing is availability(hooks); refused holds the programs a previous load
// attempt saw refused.
func preload(m *libbpfgo.Module, hooks []Hook, missing, refused map[string]error) (*attachment, error) {
	a := &attachment{off: map[string]string{}, fallbacks: map[string][]string{}, unused: map[string]bool{}, notes: map[string]string{}, ruledOut: map[string]bool{},
		refused: refused, links: map[string]*libbpfgo.BPFLink{}, iters: map[string]*iterLink{}}
	errs := map[string]error{}
	for _, h := range hooks {
		if !slices.Contains(a.parts, h.Part) {
			a.parts = append(a.parts, h.Part)
		}
		if err := cmp.Or(refused[h.Prog], missing[h.Prog]); err != nil {
			errs[h.Prog] = err
		}
	}
	chosen := chooseAlternatives(hooks, errs)
	for _, h := range hooks {
		if h.Group != "" && h.Alt != chosen[h.Group] {
			if chosen[h.Group] >= 0 || h.Alt != 0 {
				a.unused[h.Prog] = true // a fallback not needed, or a hook a fallback replaces
				if h.Alt < chosen[h.Group] && errs[h.Prog] != nil {
					a.fallbacks[h.Part] = append(a.fallbacks[h.Part], fmt.Sprintf("%s (%v)", h, errs[h.Prog]))
				}
				continue
			}
		}
		if errs[h.Prog] != nil {
			a.fail(h, errs[h.Prog])
		}
	}
	spec := os.Getenv(refuseEnv)
	for _, h := range hooks {
		p, err := m.GetProgram(h.Prog)
		if err != nil {
			return nil, fmt.Errorf("program %s: %w", h.Prog, err)
		}
		if a.unused[h.Prog] || errs[h.Prog] != nil {
			a.ruledOut[h.Prog] = errs[h.Prog] != nil
			if err := p.SetAutoload(false); err != nil {
				return nil, fmt.Errorf("disable program %s: %w", h.Prog, err)
			}
		} else if forcedRefusal(spec, h) {
			// Retyped and naming no kernel function, the kernel refuses it at load (EINVAL or EPERM): what a
			// kernel refusing this hook does.
			if p.GetType() == libbpfgo.BPFProgTypeTracing {
				p.SetProgramType(libbpfgo.BPFProgTypeExt)
			} else {
				p.SetProgramType(libbpfgo.BPFProgTypeTracing)
			}
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

// uses says whether a program is loaded and not ruled out.
func (a *attachment) uses(prog string) bool { return !a.unused[prog] && !a.failed(prog) }

// attach attaches every hook not already ruled out. cgroupRoot is the cgroup v2 mount for cgroup hooks.
func (a *attachment) attach(m *libbpfgo.Module, hooks []Hook, cgroupRoot func() (string, error)) {
	for _, h := range hooks {
		if !a.uses(h.Prog) {
			continue
		}
		if _, off := a.off[h.Part]; off {
			a.statuses = append(a.statuses, HookStatus{Hook: h, Err: fmt.Errorf("part %s %w", h.Part, errPartOff)})
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
	case RawTP:
		link, err = p.AttachRawTracepoint(h.Target)
	case Tracepoint:
		if err := ensureTracefs(); err != nil {
			return err
		}
		category, name, _ := strings.Cut(h.Target, "/")
		link, err = p.AttachTracepoint(category, name)
	case Kprobe:
		link, err = p.AttachKprobe(h.Target)
	case Uprobe:
		return nil // the plugin attaches it per file
	case TestRun:
		// A kernel may load the program and still refuse to run it: find out now, with all-zero arguments
		// (an empty batch, or the first buckets of a walk).
		_, err := testRun(p.FileDescriptor(), make([]uint64, testRunArgs))
		return err
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

// attachRefusal returns the first hook that loaded but did not attach while its ladder has a lower rung,
// and why: loadHooked then treats it as refused.
func (a *attachment) attachRefusal(hooks []Hook) (string, error) {
	for _, st := range a.statuses {
		if st.Err == nil || errors.Is(st.Err, errPartOff) || st.Group == "" || !a.loaded(st.Prog) {
			continue
		}
		for _, h := range hooks {
			if h.Group == st.Group && h.Alt > st.Alt {
				return st.Prog, fmt.Errorf("refused at attach: %w", st.Err)
			}
		}
	}
	return "", nil
}

// loaded says whether a program was handed to the kernel and accepted.
func (a *attachment) loaded(prog string) bool { return !a.unused[prog] && !a.ruledOut[prog] }

// detach destroys every link and iterator.
func (a *attachment) detach() {
	for p, l := range a.links {
		l.Destroy()
		delete(a.links, p)
	}
	for p, it := range a.iters {
		it.Destroy()
		delete(a.iters, p)
	}
}

// Mode is how a part runs on this kernel.
type Mode string

const (
	Preferred Mode = "preferred" // every hook it prefers
	Fallback  Mode = "fallback"  // on at least one fallback hook
	Off       Mode = "off"       // a required hook has neither
)

// PartStatus is one part of a plugin as it runs on this kernel.
type PartStatus struct {
	Plugin, Part string
	Mode         Mode
	Hooks        []string // each hook used and its state
	Replaced     []string // preferred hooks a fallback stands in for, each with why
	Why          string   // when Off
	Note         string   // what it does instead, or loses, on this kernel
}

func (p PartStatus) String() string {
	head := fmt.Sprintf("%s/%s: on", p.Plugin, p.Part)
	if p.Mode == Fallback {
		head += " (fallback)"
	}
	if p.Mode == Off {
		head = fmt.Sprintf("%s/%s: OFF, %s", p.Plugin, p.Part, p.Why)
	}
	s := head + "; hooks: " + strings.Join(p.Hooks, ", ")
	if len(p.Replaced) > 0 {
		s += " (fallback for " + strings.Join(p.Replaced, ", ") + ")"
	}
	if p.Note != "" {
		s += "; " + p.Note
	}
	return s
}

// Parts is each part's status, in the order of the hook table.
func (a *attachment) Parts(plugin string) []PartStatus {
	parts := make([]PartStatus, len(a.parts))
	for i, part := range a.parts {
		parts[i] = PartStatus{Plugin: plugin, Part: part, Mode: Preferred, Replaced: a.fallbacks[part], Note: a.notes[part]}
		if len(parts[i].Replaced) > 0 || parts[i].Note != "" {
			parts[i].Mode = Fallback
		}
		if reason, off := a.off[part]; off {
			parts[i].Mode, parts[i].Why = Off, reason
		}
	}
	for _, st := range a.statuses {
		i := slices.Index(a.parts, st.Part)
		state := "attached"
		switch {
		case st.Err != nil && st.Required:
			state = "FAILED (" + st.Err.Error() + ")"
		case st.Err != nil:
			state = "missing, optional (" + st.Err.Error() + ")"
			if parts[i].Mode == Preferred {
				parts[i].Mode = Fallback // runs, without something it prefers
			}
		case st.Kind == Uprobe || st.Kind == TestRun:
			state = "loaded"
		}
		parts[i].Hooks = append(parts[i].Hooks, st.Hook.String()+" "+state)
	}
	return parts
}

// Report is one line per part: each hook and whether it attached, or why the part is off.
func (a *attachment) Report(plugin string) []string {
	var lines []string
	for _, p := range a.Parts(plugin) {
		lines = append(lines, p.String())
	}
	return lines
}

// Refused is how many hooks the kernel (or DKEBPF_REFUSE_HOOKS) refused to load.
func (a *attachment) Refused() int { return len(a.refused) }

// On says whether a part has all its required hooks.
func (a *attachment) On(part string) bool { _, off := a.off[part]; return !off }

package bpf

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestChooseAlternativesPrefersTheLowestCompleteAlt(t *testing.T) {
	hooks := []Hook{
		{Prog: "tp_send", Group: "owner", Alt: 0},
		{Prog: "tp_recv", Group: "owner", Alt: 0},
		{Prog: "kp_send", Group: "owner", Alt: 1},
		{Prog: "kp_recv", Group: "owner", Alt: 1},
		{Prog: "alone"},
	}
	missing := errors.New("missing")
	for _, tc := range []struct {
		name string
		errs map[string]error
		want int
	}{
		{"everything available", nil, 0},
		{"one preferred hook missing: the whole fallback set", map[string]error{"tp_recv": missing}, 1},
		{"fallback incomplete too", map[string]error{"tp_send": missing, "kp_recv": missing}, -1},
		{"fallback missing, preferred there", map[string]error{"kp_send": missing}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := chooseAlternatives(hooks, tc.errs)
			if got["owner"] != tc.want {
				t.Errorf("chose alt %d, want %d", got["owner"], tc.want)
			}
			if _, ok := got[""]; ok {
				t.Error("hooks outside any group were treated as a group")
			}
		})
	}
}

// The ladders of the real hook tables: refusing each rung in turn picks the next one, and a part with no
// rung left is off (its required hooks) or runs without it (optional hooks).
func TestHookTablesFallBackRungByRung(t *testing.T) {
	refused := errors.New("refused")
	for _, tc := range []struct {
		table   []Hook
		refuse  []string // programs refused
		group   string
		want    int      // chosen alt
		wantUse []string // programs of that group in use
	}{
		{NetflowHooks, nil, "tcp-state", 0, []string{"nf_state"}},
		{NetflowHooks, []string{"nf_state"}, "tcp-state", 1, []string{"nf_state_raw"}},
		{NetflowHooks, []string{"nf_state", "nf_state_raw"}, "tcp-state", 2, []string{"nf_state_tp"}},
		{NetflowHooks, []string{"nf_state", "nf_state_raw", "nf_state_tp"}, "tcp-state", -1, nil},
		{NetflowHooks, nil, "tcp-live", 0, []string{"nf_iter"}},
		{NetflowHooks, []string{"nf_iter"}, "tcp-live", 1, []string{"nf_live"}},
		{NetflowHooks, nil, "tcp-seed", 0, []string{"nf_seed"}},
		{NetflowHooks, []string{"nf_seed"}, "tcp-seed", 1, []string{"nf_seed_walk"}},
		{NetflowHooks, nil, "udp-owner", 0, []string{"nf_udp_send", "nf_udp_recv"}},
		{NetflowHooks, []string{"nf_udp_recv"}, "udp-owner", 1, []string{"nf_udp_send_raw", "nf_udp_recv_raw"}},
		{NetflowHooks, []string{"nf_udp_send", "nf_udp_recv_raw"}, "udp-owner", 2,
			[]string{"nf_kp_udp_send", "nf_kp_udp6_send", "nf_kp_udp_recv", "nf_kp_udp6_recv"}},
		{BashHooks, nil, "exec", 0, []string{"bash_exec"}},
		{BashHooks, []string{"bash_exec"}, "exec", 1, []string{"bash_exec_raw"}},
		{BashHooks, []string{"bash_exec", "bash_exec_raw"}, "exec", 2, []string{"bash_exec_tp"}},
	} {
		errs := map[string]error{}
		for _, p := range tc.refuse {
			errs[p] = refused
		}
		got := chooseAlternatives(tc.table, errs)[tc.group]
		if got != tc.want {
			t.Errorf("%s with %v refused: chose alt %d, want %d", tc.group, tc.refuse, got, tc.want)
			continue
		}
		var use []string
		for _, h := range tc.table {
			if h.Group == tc.group && h.Alt == got {
				use = append(use, h.Prog)
			}
		}
		if strings.Join(use, ",") != strings.Join(tc.wantUse, ",") {
			t.Errorf("%s with %v refused: uses %v, want %v", tc.group, tc.refuse, use, tc.wantUse)
		}
	}
}

// Every rung of a ladder belongs to the same part and is as required as the others: a fallback
// stands in for its preferred hook and nothing else.
func TestHookTablesAreConsistent(t *testing.T) {
	for name, table := range map[string][]Hook{"netflow": NetflowHooks, "bash": BashHooks} {
		progs := map[string]bool{}
		first := map[string]Hook{}
		for _, h := range table {
			if progs[h.Prog] {
				t.Errorf("%s: program %s listed twice", name, h.Prog)
			}
			progs[h.Prog] = true
			if h.Group == "" {
				continue
			}
			f, ok := first[h.Group]
			if !ok {
				first[h.Group] = h
				continue
			}
			if f.Part != h.Part || f.Required != h.Required {
				t.Errorf("%s: group %s mixes parts or requirement: %+v and %+v", name, h.Group, f, h)
			}
		}
	}
}

func TestForcedRefusalMatchesNamesProgramsAndKinds(t *testing.T) {
	state := Hook{Prog: "nf_state", Kind: TPBTF, Target: "inet_sock_set_state"}
	iter := Hook{Prog: "nf_iter", Kind: MapIter, Target: "nf_socks"}
	live := Hook{Prog: "nf_live", Kind: TestRun}
	raw := Hook{Prog: "nf_state_raw", Kind: RawTP, Target: "inet_sock_set_state"}
	for _, tc := range []struct {
		spec string
		h    Hook
		want bool
	}{
		{"", state, false},
		{"tp_btf/inet_sock_set_state", state, true},
		{"tp_btf/sock_send_length", state, false},
		{"tp_btf/*", state, true},
		{"tp_btf/*", raw, false},
		{" iter/bpf_map_elem , tp_btf/x", iter, true},
		{"nf_iter", iter, true},
		{"iter/*", iter, true},
		{"raw_tp/*", live, true},
		{"raw_tp/*", raw, true},
		{"raw_tp/inet_sock_set_state", live, false},
		{"iter/tcp", iter, false},
	} {
		if got := forcedRefusal(tc.spec, tc.h); got != tc.want {
			t.Errorf("forcedRefusal(%q, %s) = %v, want %v", tc.spec, tc.h.Name(), got, tc.want)
		}
	}
}

// What libbpf 1.4 prints when the kernel refuses a program, as seen on 6.18.44-fc-v1098 (iter/bpf_map_elem).
const refusedLog = `libbpf: prog 'nf_iter': BPF program load failed: Operation not permitted
libbpf: permission error while running as root; try raising 'ulimit -l'? current value: 8.0 MiB
libbpf: prog 'nf_iter': -- BEGIN PROG LOAD LOG --
processed 0 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
libbpf: prog 'nf_iter': failed to load: -1
libbpf: failed to load object '/proc/self/fd/5'
`

const verifierLog = `libbpf: prog 'nf_state_raw': BPF program load failed: Permission denied
libbpf: prog 'nf_state_raw': -- BEGIN PROG LOAD LOG --
0: R1=ctx() R10=fp0
; int BPF_PROG(nf_state_raw, struct sock *sk, int oldstate, int newstate)
0: (79) r6 = *(u64 *)(r1 +0)
1: (61) r2 = *(u32 *)(r6 +0)
R6 invalid mem access 'scalar'
processed 2 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
libbpf: prog 'nf_state_raw': failed to load: -13
`

func TestRefusalNamesTheProgramErrnoAndVerifierTail(t *testing.T) {
	prog, why := refusal(refusedLog, fmt.Errorf("failed to load BPF object: %w", unix.EPERM))
	if prog != "nf_iter" || why.Error() != "refused by the kernel: EPERM" {
		t.Errorf("got %q, %v", prog, why)
	}
	prog, why = refusal(verifierLog, fmt.Errorf("failed to load BPF object: %w", unix.EACCES))
	want := "refused by the kernel: EACCES; verifier: 0: (79) r6 = *(u64 *)(r1 +0) | 1: (61) r2 = *(u32 *)(r6 +0) | R6 invalid mem access 'scalar'"
	if prog != "nf_state_raw" || why.Error() != want {
		t.Errorf("got %q, %v; want %s", prog, why, want)
	}
	if prog, _ := refusal("libbpf: failed to find BTF for extern 'x'\n", unix.ESRCH); prog != "" {
		t.Errorf("a failure naming no program was read as a refusal of %q", prog)
	}
}

// A hook that loaded but did not attach is treated as refused only when its ladder has a lower rung,
// and never for a hook skipped because its part was already off.
func TestAttachRefusalOnlyWhereALowerRungExists(t *testing.T) {
	hooks := []Hook{
		{Prog: "state", Group: "state", Part: "tcp"},
		{Prog: "state_raw", Group: "state", Alt: 1, Part: "tcp"},
		{Prog: "alone", Part: "udp"},
		{Prog: "last", Group: "owner", Alt: 1, Part: "udp"},
	}
	failed := errors.New("attach failed")
	for _, tc := range []struct {
		statuses []HookStatus
		want     string
	}{
		{[]HookStatus{{Hook: hooks[0]}, {Hook: hooks[2]}}, ""},
		{[]HookStatus{{Hook: hooks[0], Err: failed}}, "state"},
		{[]HookStatus{{Hook: hooks[2], Err: failed}}, ""},                                // no ladder
		{[]HookStatus{{Hook: hooks[3], Err: failed}}, ""},                                // the last rung
		{[]HookStatus{{Hook: hooks[0], Err: fmt.Errorf("part tcp %w", errPartOff)}}, ""}, // skipped, not refused
	} {
		a := &attachment{statuses: tc.statuses, unused: map[string]bool{}, ruledOut: map[string]bool{}}
		if got, _ := a.attachRefusal(hooks); got != tc.want {
			t.Errorf("%+v: got %q, want %q", tc.statuses, got, tc.want)
		}
	}
}

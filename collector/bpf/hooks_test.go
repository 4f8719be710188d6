package bpf

import (
	"errors"
	"testing"
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

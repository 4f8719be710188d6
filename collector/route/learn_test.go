package route

import (
	"fmt"
	"testing"
)

func TestLearnerMakesAPositionWithManySegmentsAVariable(t *testing.T) {
	l := NewLearner()
	host := "api.example.com:443"
	for i := range MaxLiterals {
		l.Learn(host, fmt.Sprintf("/teams/team-%c%c/members", 'a'+i/26, 'a'+i%26))
	}
	l.Learn(host, "/teams/{id}/members")
	l.Learn(host, "/health")
	if got := l.Apply(host, "/teams/team-aa/members"); got != "/teams/team-aa/members" {
		t.Fatalf("after %d distinct teams: %q, want the path as it is", MaxLiterals, got)
	}
	if l.Stats().Learned != 0 {
		t.Fatalf("learned %d positions too early", l.Stats().Learned)
	}
	if got := l.Learn(host, "/teams/one-too-many/settings"); got != "/teams/{param}/settings" {
		t.Errorf("Learn of the path that makes the position a variable = %q, want it applied", got)
	}
	for _, tc := range []struct{ host, path, want string }{
		{host, "/teams/team-aa/members", "/teams/{param}/members"},
		{"API.example.com", "/teams/never-seen/members", "/teams/{param}/members"}, // port and case aside, one host
		{host, "/teams/one-too-many/settings", "/teams/{param}/settings"},
		{host, "/teams/x/unknown/tail", "/teams/{param}/unknown/tail"}, // nothing learned past {param}/unknown
		{host, "/teams/{id}/members", "/teams/{id}/members"},           // a rule's placeholder stays
		{host, "/teams", "/teams"},
		{host, "/teams/", "/teams/"},
		{host, "/health", "/health"},
		{host, "*", "*"},
		{"other.example.com", "/teams/team-aa/members", "/teams/team-aa/members"}, // another host learned nothing
	} {
		if got := l.Apply(tc.host, tc.path); got != tc.want {
			t.Errorf("Apply(%q, %q) = %q, want %q", tc.host, tc.path, got, tc.want)
		}
	}
	if s := l.Stats(); s.Learned != 1 || s.Unlearned != 0 {
		t.Errorf("stats %+v, want 1 position learned", s)
	}
	// The merged tree: the host, teams, {param}, its members and settings, {id}, its members, health.
	if l.nodes != 8 {
		t.Errorf("%d nodes after the merge, want 8", l.nodes)
	}
}

func TestLearnerLearnsNestedVariables(t *testing.T) {
	l := NewLearner()
	// 51 owners of 3 repositories each: no owner has many, but once the owners merge, their repositories do.
	for owner := range MaxLiterals + 1 {
		for repo := range 3 {
			l.Learn("github.test", fmt.Sprintf("/repos/o%d/r%d-%d/issues", owner, owner, repo))
		}
	}
	if got := l.Apply("github.test", "/repos/someone/something/issues"); got != "/repos/{param}/{param}/issues" {
		t.Errorf("Apply = %q, want /repos/{param}/{param}/issues", got)
	}
	if s := l.Stats(); s.Learned != 2 {
		t.Errorf("stats %+v, want 2 positions learned", s)
	}
}

func TestLearnerIsBounded(t *testing.T) {
	l := NewLearner()
	for i := range MaxNodes + 10 {
		l.Learn(fmt.Sprintf("h%d.test", i), "/a")
	}
	if l.nodes > MaxNodes {
		t.Errorf("%d nodes, bound %d", l.nodes, MaxNodes)
	}
	if s := l.Stats(); s.Unlearned == 0 {
		t.Errorf("stats %+v: nothing counted as unlearned", s)
	}
	if got := l.Apply("h0.test", "/a/b"); got != "/a/b" {
		t.Errorf("Apply = %q", got)
	}
}

func TestLearnAndApplyOfAKnownPathDoNotAllocate(t *testing.T) {
	l := NewLearner()
	l.Learn("h", "/api/v1/users/list")
	if n := testing.AllocsPerRun(100, func() {
		l.Learn("h:80", "/api/v1/users/list")
		l.Apply("h:80", "/api/v1/users/list")
	}); n != 0 {
		t.Errorf("%v allocations", n)
	}
}

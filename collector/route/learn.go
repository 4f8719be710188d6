package route

import (
	"net"
	"strings"
)

// Param is the placeholder of a learned variable segment: a position of a host's paths where more than
// MaxLiterals distinct segments were seen (user names, repositories, slugs: what no rule recognises).
const Param = "{param}"

// Bounds of a Learner.
const (
	// MaxLiterals is how many distinct segments one position (of one host, after one prefix) may have before
	// it is learned to be a variable: the MaxLiterals+1-th makes it {param}.
	MaxLiterals = 50
	// MaxNodes bounds the positions remembered over all hosts; paths that would need more are not learned
	// from (Stats.Unlearned) and keep their segments.
	MaxNodes = 100000
)

// LearnStats are a Learner's cumulative counts.
type LearnStats struct {
	Learned   uint64 // positions learned to be variables
	Unlearned uint64 // paths not learned from in full: MaxNodes reached
}

// Learner learns, per host, which positions of its route templates vary: a trie of segments per host, where
// a position whose distinct segments pass MaxLiterals becomes one {param} child, its subtrees merged into it.
// Segments that a rule already made a placeholder ({id}, {uuid}, …) and empty segments are kept as they are.
// What it learned stays learned: Apply rewrites the paths of later intervals too. Not safe for concurrent use.
type Learner struct {
	hosts map[string]*node
	nodes int
	stats LearnStats
}

type node struct {
	children map[string]*node // by segment; a variable position has its literals under Param
	variable bool
}

// NewLearner returns a Learner that knows nothing yet.
func NewLearner() *Learner { return &Learner{hosts: map[string]*node{}} }

// Host is the host a Host header names: lower case, without port, brackets or trailing dot; "" for none.
func Host(h string) string {
	if h == "" || h == "N/A" {
		return ""
	}
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

// literal reports whether seg is a segment a position's variable replaces.
func literal(seg string) bool { return seg != "" && seg[0] != '{' }

// Learn counts the segments of template (a route template, Template's result) under host (a Host header), and
// returns template as Apply does after it: with what this one taught already applied.
func (l *Learner) Learn(host, template string) string {
	if !strings.HasPrefix(template, "/") {
		return template // "*", an absolute-form target's leftovers: not a path of segments
	}
	h := Host(host)
	n := l.hosts[h]
	if n == nil {
		if !l.take() {
			return template
		}
		n = &node{}
		l.hosts[h] = n
	}
	for rest := template[1:]; n != nil; {
		seg, tail, more := strings.Cut(rest, "/")
		n = l.child(n, seg)
		if !more {
			break
		}
		rest = tail
	}
	return l.Apply(host, template)
}

// child is n's child for seg, made if need be (nil when MaxNodes is reached); a literal that makes n's
// distinct literals pass MaxLiterals makes n a variable, and the child is its Param one.
func (l *Learner) child(n *node, seg string) *node {
	if n.variable && literal(seg) {
		seg = Param
	}
	if c := n.children[seg]; c != nil {
		return c
	}
	if !l.take() {
		return nil
	}
	c := &node{}
	if n.children == nil {
		n.children = map[string]*node{}
	}
	n.children[strings.Clone(seg)] = c // not the whole path's memory for one segment
	if !n.variable && literal(seg) && n.literals() > MaxLiterals {
		return l.vary(n)
	}
	return c
}

// take reserves one node of MaxNodes, or counts a path not learned from.
func (l *Learner) take() bool {
	if l.nodes >= MaxNodes {
		l.stats.Unlearned++
		return false
	}
	l.nodes++
	return true
}

// literals counts n's children that a variable would replace.
func (n *node) literals() int {
	k := 0
	for seg := range n.children {
		if literal(seg) {
			k++
		}
	}
	return k
}

// vary makes n a variable position and returns its Param child.
func (l *Learner) vary(n *node) *node {
	n.variable = true
	l.stats.Learned++
	return l.fold(n)
}

// fold moves the literal children of n, a variable position, into its Param child, their subtrees merged.
func (l *Learner) fold(n *node) *node {
	p := n.children[Param]
	if p == nil {
		p = &node{}
		l.nodes++ // taken back at once: the literal children it replaces are more
		n.children[Param] = p
	}
	for seg, c := range n.children {
		if literal(seg) {
			l.merge(p, c)
			delete(n.children, seg)
		}
	}
	return p
}

// merge moves src's subtree into dst, releasing the nodes that become one. A position that passes
// MaxLiterals in the merge becomes a variable.
func (l *Learner) merge(dst, src *node) {
	l.nodes-- // src itself
	for seg, c := range src.children {
		if d := dst.children[seg]; d != nil {
			l.merge(d, c)
			continue
		}
		if dst.children == nil {
			dst.children = map[string]*node{}
		}
		dst.children[seg] = c
	}
	switch {
	case dst.variable || src.variable:
		dst.variable = true
		l.fold(dst) // src's literals, under a variable position
	case dst.literals() > MaxLiterals:
		l.vary(dst)
	}
}

// Apply returns template with each segment at a position learned variable for host replaced by Param. A
// template with none is returned as it is, without allocating.
func (l *Learner) Apply(host, template string) string {
	n := l.hosts[Host(host)]
	if n == nil || !strings.HasPrefix(template, "/") {
		return template
	}
	var b []byte // nil until a segment is replaced
	start := 1   // of the current segment
	for i := 1; i <= len(template) && n != nil; i++ {
		if i < len(template) && template[i] != '/' {
			continue
		}
		seg := template[start:i]
		if n.variable && literal(seg) {
			if b == nil {
				b = append(make([]byte, 0, len(template)), template[:start]...)
			}
			b = append(b, Param...)
			seg = Param
		} else if b != nil {
			b = append(b, seg...)
		}
		n = n.children[seg]
		start = i + 1
		if i < len(template) && b != nil {
			if n == nil {
				return string(append(b, template[i:]...)) // nothing learned past here
			}
			b = append(b, '/')
		}
	}
	if b == nil {
		return template
	}
	return string(b)
}

// Stats returns the learner's counts.
func (l *Learner) Stats() LearnStats { return l.stats }

package dnsflow

import (
	"dkebpf/collector/flow"
)

// queryKey identifies a query until its answer: the socket, the server and the DNS ID. The client side is
// the socket (cookie); an unconnected UDP socket may ask several servers, hence their address.
type queryKey struct {
	cookie uint64
	proto  uint8
	server [16]byte
	port   uint16
	id     uint16
}

// query is one query in flight, linked into the Tracker's FIFO so Expire visits only the expired ones.
type query struct {
	key          queryKey
	ts           uint64 // CLOCK_MONOTONIC when it was sent
	flow         flow.Key
	qname, qtype string
	ignored      bool // from a datakit* process: matched, then dropped unreported
	prev, next   *query
}

func newKey(r *rec, id uint16) queryKey {
	return queryKey{cookie: r.cookie, proto: r.t.Proto, server: r.t.Daddr, port: r.t.Dport, id: id}
}

// query enters a query into the in-flight table.
func (t *Tracker) query(r rec, m *message) {
	o, known := r.owner, r.hasOwner
	if !known && t.cfg.Owner != nil {
		o.Proc, o.netns, known = t.cfg.Owner(r.cookie)
	}
	if !known {
		o = owner{}
	}
	k := newKey(&r, m.id)
	if old := t.inflight[k]; old != nil {
		// A retry with the same ID (glibc resends the same query): the first went unanswered.
		t.remove(old)
		t.unanswered(old)
	} else if len(t.inflight) >= t.cfg.MaxInFlight {
		t.remove(t.fifo.next)
		t.stats.InFlightEvicted++
	}
	q := &query{key: k, ts: r.ts, qname: m.qname, qtype: m.qtype}
	if flow.OwnProcess(o.Comm) { // do not report our own lookups
		q.ignored = true
		t.stats.Ignored++
	} else {
		q.flow = t.flowKey(r.t, o)
		t.stats.Queries++
	}
	t.inflight[k] = q
	q.prev, q.next = t.fifo.prev, &t.fifo
	t.fifo.prev.next = q
	t.fifo.prev = q
}

// answer completes the query it answers, and feeds the name cache.
func (t *Tracker) answer(r rec, m *message) {
	qname := m.qname
	if q := t.inflight[newKey(&r, m.id)]; q != nil {
		t.remove(q)
		if !m.question {
			qname = q.qname
		}
		if !q.ignored {
			t.stats.Answers++
			var latency uint64
			if r.ts > q.ts {
				latency = r.ts - q.ts
			}
			t.record(q, m.rcode, latency)
		}
	} else {
		t.stats.UnmatchedAnswers++
	}
	t.learnNames(qname, m)
}

// learnNames puts the addresses an answer gave for qname into the name cache.
func (t *Tracker) learnNames(qname string, m *message) {
	if qname == "" { // neither the answer nor a query names what was asked
		return
	}
	now := t.now()
	for _, a := range m.addrs {
		if a.owner == qname || containsString(m.cnames, a.owner) { // records of other names are not the answer
			t.names.put(a.addr, qname, a.ttl, now)
		}
	}
}

// unanswered reports a query that got no answer: rcode -1, latency 0.
func (t *Tracker) unanswered(q *query) {
	if q.ignored {
		return
	}
	t.stats.Timeouts++
	t.record(q, -1, 0)
}

// remove takes q out of the in-flight table and the FIFO.
func (t *Tracker) remove(q *query) {
	delete(t.inflight, q.key)
	q.prev.next, q.next.prev = q.next, q.prev
	q.prev, q.next = nil, nil
}

// AddCounted takes what the kernel counted under one key: count queries of one flow, name, type and rcode
// (-1: unanswered), their latencies summed and the largest.
func (t *Tracker) AddCounted(k *Key, count, latencySum, latencyMax uint64) {
	if t.filtered(flow.Addr(k.T.Family, k.T.Daddr)) {
		t.stats.Ignored += count
		return
	}
	m, err := parse(k.question())
	if err != nil {
		t.stats.Malformed += count
		return
	}
	o := owner{flow.Proc{Pid: k.Pid, Comm: t.comms.Name(k.Comm), Mntns: k.Mntns}, k.Netns}
	if flow.OwnProcess(o.Comm) { // do not report our own lookups
		t.stats.Ignored += count
		return
	}
	ak := aggKey{flow: t.flowKey(k.T, o), qname: m.qname, qtype: m.qtype, rcode: int(k.Rcode)}
	a := t.points[ak]
	if a == nil {
		a = &acc{}
		t.points[ak] = a
	}
	a.count += count
	a.latencySum += latencySum
	a.latencyMax = max(a.latencyMax, latencyMax)
}

package dnsflow

import (
	"dkebpf/collector/flow"

	"slices"
)

// dirOut is NF_DIR_OUT: a client's flow, the only direction dnsflow reports.
const dirOut = 1

// aggKey is DataKit's dnsflow aggregation key (the flow's tags and rcode) plus qname and qtype.
type aggKey struct {
	flow         flow.Key
	qname, qtype string
	rcode        int
}

type acc struct {
	count, latencySum, latencyMax uint64
}

// flowKey returns the netflow key of a query's flow, with dnsflow's port rule: a port is kept when it is
// a DNS server port and "*" otherwise (DataKit keeps exactly 53).
func (t *Tracker) flowKey(tp flow.Tuple, o owner) flow.Key {
	k := flow.NewKey(tp, dirOut, 0, o.Proc, o.netns)
	k.SrcPort, k.DstPort = t.portKey(tp.Sport), t.portKey(tp.Dport)
	return k
}

func (t *Tracker) portKey(p uint16) int32 {
	if slices.Contains(t.ports, p) {
		return int32(p)
	}
	return flow.AnyPort
}

// record adds one finished query to the interval: answered (rcode, latency) or not (-1, 0).
func (t *Tracker) record(q *query, rcode int, latency uint64) {
	k := aggKey{flow: q.flow, qname: q.qname, qtype: q.qtype, rcode: rcode}
	a := t.points[k]
	if a == nil {
		a = &acc{}
		t.points[k] = a
	}
	a.count++
	a.latencySum += latency
	a.latencyMax = max(a.latencyMax, latency)
}

// tags returns netflow's tags of the flow less those DataKit's dnsflow does not send, plus the query's.
func (k aggKey) tags() map[string]string {
	t := k.flow.Tags()
	for _, n := range []string{"dst_nat_ip", "dst_nat_port", "client_ip_type", "server_ip_type"} {
		delete(t, n)
	}
	t["qname"] = k.qname
	t["qtype"] = k.qtype
	t["rcode_name"] = rcodeName(k.rcode)
	return t
}

func (a *acc) fields(k aggKey) map[string]any {
	return map[string]any{
		"rcode":       int64(k.rcode),
		"count":       int64(a.count),
		"latency":     int64(a.latencySum / a.count),
		"latency_max": int64(a.latencyMax),
	}
}

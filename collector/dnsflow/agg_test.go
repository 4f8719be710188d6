package dnsflow

import (
	"dkebpf/collector/flow"

	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// exchange runs one UDP query and its answer through tr.
func exchange(t *testing.T, tr *Tracker, tp flow.Tuple, cookie uint64, flags uint8, qname string) {
	t.Helper()
	tr.Add(ev(tp, cookie, tQuery, FlagEgress|flags, queryMsg(t, 1, qname, dnsmessage.TypeA)))
	tr.Add(ev(tp, cookie, tAnswer, 0, answerMsg(t, 1, qname, dnsmessage.TypeA, dnsmessage.RCodeSuccess)))
}

func TestProcessTagsComeFromTheRecordThenConfigOwner(t *testing.T) {
	owner := func(c uint64) (flow.Proc, uint32, bool) {
		if c == 2 {
			return flow.Proc{Pid: 77, Comm: "resolved", Mntns: 4026532178}, 4026532000, true
		}
		return flow.Proc{}, 0, false
	}
	for _, c := range []struct {
		name   string
		owner  func(uint64) (flow.Proc, uint32, bool)
		cookie uint64
		flags  uint8
		want   map[string]string // "" : the tag is absent
		mntns  uint32            // the point's mount namespace (the container key)
	}{
		{"record's owner", owner, 2, FlagOwner, map[string]string{"pid": "1234", "process_name": "curl", "netns": "4026531840"}, testMntns},
		{"Config.Owner", owner, 2, 0, map[string]string{"pid": "77", "process_name": "resolved", "netns": "4026532000"}, 4026532178},
		{"Config.Owner does not know", owner, 3, 0, map[string]string{"pid": "0", "process_name": "", "netns": ""}, 0},
		{"no Config.Owner", nil, 2, 0, map[string]string{"pid": "0", "process_name": "", "netns": ""}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(Config{Owner: c.owner})
			exchange(t, tr, udp4, c.cookie, c.flags, "example.com")
			pts := tr.Flush(wall0)
			if len(pts) != 1 {
				t.Fatalf("%d points, want 1", len(pts))
			}
			if pts[0].Mntns != c.mntns {
				t.Errorf("mount namespace %d, want %d", pts[0].Mntns, c.mntns)
			}
			for k, want := range c.want {
				got, ok := pts[0].Tags[k]
				if want == "" && k == "netns" {
					if ok {
						t.Errorf("netns = %q, want no tag", got)
					}
					continue
				}
				if got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestFlowTagsFollowTheAddressesAndPorts(t *testing.T) {
	for _, c := range []struct {
		name   string
		ports  []uint16
		client string
		server string
		want   map[string]string
	}{
		{"IPv6", nil, "[2001:db8::5]:41000", "[2001:db8::53]:53", map[string]string{
			"family": "IPv6", "src_ip": "2001:db8::5", "dst_ip": "2001:db8::53", "src_ip_type": "other", "dst_ip_type": "other",
			"src_port": "*", "dst_port": "53", "client_ip": "2001:db8::5", "server_ip": "2001:db8::53", "server_port": "53"}},
		{"IPv4-mapped is IPv4", nil, "[::ffff:10.0.0.5]:41000", "[::ffff:127.0.0.53]:53", map[string]string{
			"family": "IPv4", "src_ip": "10.0.0.5", "dst_ip": "127.0.0.53", "dst_ip_type": "loopback"}},
		{"a server port not in Ports is *", nil, "10.0.0.5:41000", "10.0.0.53:5353", map[string]string{
			"src_port": "*", "dst_port": "*", "client_port": "*", "server_port": "*"}},
		{"every port in Ports is kept", []uint16{53, 5353}, "10.0.0.5:53", "10.0.0.53:5353", map[string]string{
			"src_port": "53", "dst_port": "5353", "client_port": "53", "server_port": "5353"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(Config{Ports: c.ports})
			exchange(t, tr, tuple(netip.MustParseAddrPort(c.client), netip.MustParseAddrPort(c.server), protoUDP), 1, FlagOwner, "example.com")
			pts := tr.Flush(wall0)
			if len(pts) != 1 {
				t.Fatalf("%d points, want 1", len(pts))
			}
			for k, want := range c.want {
				if got := pts[0].Tags[k]; got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"dst_nat_ip", "dst_nat_port", "client_ip_type", "server_ip_type"} {
				if v, ok := pts[0].Tags[k]; ok {
					t.Errorf("tag %s = %q: DataKit's dnsflow has none", k, v)
				}
			}
		})
	}
}

func TestQnameIsLowerCasedSoCasesAggregate(t *testing.T) {
	tr := newTestTracker(Config{})
	exchange(t, tr, udp4, 1, FlagOwner, "Example.COM")
	exchange(t, tr, udp4, 1, FlagOwner, "example.com")
	checkSummary(t, tr.Flush(wall0), "udp example.com A NOERROR pid=1234 rcode=0 count=2 latency=250000 max=250000")
}

func TestFiltersDropQueriesAndTheirAnswers(t *testing.T) {
	v6 := tuple(netip.MustParseAddrPort("[2001:db8::5]:41000"), netip.MustParseAddrPort("[2001:db8::53]:53"), protoUDP)
	for _, c := range []struct {
		name string
		cfg  Config
		tp   flow.Tuple
		comm string
		want Stats
	}{
		{"server in IgnoreCIDRs", Config{Filter: flow.Filter{IgnoreCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}}}, udp4, "curl", Stats{Ignored: 2}},
		{"client in IgnoreCIDRs is kept", Config{Filter: flow.Filter{IgnoreCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32")}}}, udp4, "curl", Stats{Queries: 1, Answers: 1}},
		{"IPv6 disabled", Config{Filter: flow.Filter{IPv6Disabled: true}}, v6, "curl", Stats{Ignored: 2}},
		{"a datakit process", Config{}, udp4, "datakit-ebpf", Stats{Ignored: 1}}, // its answer is matched silently
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTestTracker(c.cfg)
			q := ev(c.tp, 1, tQuery, FlagEgress|FlagOwner, queryMsg(t, 1, "example.com", dnsmessage.TypeA))
			q.Comm = [16]byte{}
			copy(q.Comm[:], c.comm)
			tr.Add(q)
			tr.Add(ev(c.tp, 1, tAnswer, 0, answerMsg(t, 1, "example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess)))
			tr.Expire(1 << 40)
			pts := tr.Flush(wall0)
			if want := int(c.want.Queries); len(pts) != want {
				t.Errorf("%d points, want %d", len(pts), want)
			}
			if s := tr.Stats(); s != c.want {
				t.Errorf("stats %+v, want %+v", s, c.want)
			}
		})
	}
}

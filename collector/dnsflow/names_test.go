package dnsflow

import (
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func TestAnswersFeedTheNameCacheWithTheQuestionName(t *testing.T) {
	tr := newTestTracker(Config{})
	tr.Add(ev(udp4, 1, tQuery, FlagEgress|FlagOwner, queryMsg(t, 1, "WWW.Example.com", dnsmessage.TypeA)))
	tr.Add(ev(udp4, 1, tAnswer, 0, answerMsg(t, 1, "www.example.com", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"www.example.com", dnsmessage.TypeCNAME, 300, "edge.cdn.net"},
		rr{"edge.cdn.net", dnsmessage.TypeCNAME, 300, "e1.cdn.net"},
		rr{"e1.cdn.net", dnsmessage.TypeA, 300, "192.0.2.1"},
		rr{"e1.cdn.net", dnsmessage.TypeAAAA, 300, "2001:db8::1"},
		rr{"unrelated.example", dnsmessage.TypeA, 300, "192.0.2.99"})))
	// An answer whose query was not seen still names its addresses.
	tr.Add(ev(udp4, 1, tAnswer, 0, answerMsg(t, 2, "other.example", dnsmessage.TypeA, dnsmessage.RCodeSuccess,
		rr{"other.example", dnsmessage.TypeA, 300, "192.0.2.2"})))
	// Error answers name nothing.
	tr.Add(ev(udp4, 1, tAnswer, 0, answerMsg(t, 3, "bad.example", dnsmessage.TypeA, dnsmessage.RCodeServerFailure,
		rr{"bad.example", dnsmessage.TypeA, 300, "192.0.2.3"})))
	for _, c := range []struct {
		ip   string
		name string
		ok   bool
	}{
		{"192.0.2.1", "www.example.com", true},
		{"::ffff:192.0.2.1", "www.example.com", true},
		{"2001:db8::1", "www.example.com", true},
		{"192.0.2.99", "", false},
		{"192.0.2.2", "other.example", true},
		{"192.0.2.3", "", false},
	} {
		name, ok := tr.Names().Lookup(netip.MustParseAddr(c.ip), wall0)
		if name != c.name || ok != c.ok {
			t.Errorf("Lookup(%s) = %q, %v; want %q, %v", c.ip, name, ok, c.name, c.ok)
		}
	}
}

func TestNameCacheKeepsANameForItsBoundedTTL(t *testing.T) {
	for _, c := range []struct {
		ttl  uint32
		keep time.Duration
	}{
		{0, minNameTTL}, {20, minNameTTL}, {300, 300 * time.Second}, {86400, maxNameTTL},
	} {
		t.Run(fmt.Sprint(c.ttl), func(t *testing.T) {
			nc := newNameCache(10)
			ip := netip.MustParseAddr("192.0.2.1")
			nc.put(ip, "example.com", c.ttl, wall0)
			if _, ok := nc.Lookup(ip, wall0.Add(c.keep-time.Nanosecond)); !ok {
				t.Errorf("gone before %v", c.keep)
			}
			if _, ok := nc.Lookup(ip, wall0.Add(c.keep)); ok {
				t.Errorf("still there after %v", c.keep)
			}
			if nc.Len() != 0 {
				t.Errorf("an expired entry is kept after its lookup")
			}
		})
	}
}

func TestNameCacheEvictsTheLeastRecentlyUsed(t *testing.T) {
	nc := newNameCache(2)
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	nc.put(a, "a", 300, wall0)
	nc.put(b, "b", 300, wall0)
	nc.Lookup(a, wall0) // a is now more recent than b
	nc.put(c, "c", 300, wall0)
	if _, ok := nc.Lookup(b, wall0); ok {
		t.Error("b survived; it was the least recently used")
	}
	for ip, want := range map[netip.Addr]string{a: "a", c: "c"} {
		if got, _ := nc.Lookup(ip, wall0); got != want {
			t.Errorf("Lookup(%s) = %q, want %q", ip, got, want)
		}
	}
	if nc.evictions() != 1 {
		t.Errorf("%d evictions, want 1", nc.evictions())
	}
	// An expired entry makes room without counting as an eviction; a new answer replaces the name.
	nc.put(a, "a2", 300, wall0)
	nc.put(b, "b", 0, wall0.Add(time.Hour)) // evicts c, expired by then
	if nc.evictions() != 1 {
		t.Errorf("%d evictions after replacing an expired entry, want 1", nc.evictions())
	}
	if got, _ := nc.Lookup(a, wall0); got != "a2" {
		t.Errorf("Lookup(a) = %q after a new answer, want a2", got)
	}
}

func TestNameCacheIsSafeForConcurrentUse(t *testing.T) {
	nc := newNameCache(64)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(i % 100)})
				if g%2 == 0 {
					nc.put(ip, "x", 60, wall0)
				} else {
					nc.Lookup(ip, wall0)
				}
			}
		}()
	}
	wg.Wait()
	if nc.Len() > 64 {
		t.Errorf("%d entries, bound 64", nc.Len())
	}
}

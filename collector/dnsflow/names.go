package dnsflow

import (
	"container/list"
	"net/netip"
	"sync"
	"time"
)

// Bounds of how long a name is kept: a short TTL (CDNs use 20 s) still names the connections the client
// opens a little later, and a day-long TTL does not pin an address a host may have moved away from.
const (
	minNameTTL = 60 * time.Second
	maxNameTTL = time.Hour
)

// NameCache maps the addresses of DNS answers to the names that were asked for: netflow's dst_domain.
// It is safe for concurrent use.
//
// An address maps to the question's name, even when a CNAME chain led to it (DataKit uses the first CNAME's
// name): the question is what the client asked for, and the name its connections were meant for. When
// several names resolve to one address (shared hosting, CDNs), the latest answer wins.
type NameCache struct {
	mu      sync.Mutex
	max     int
	byAddr  map[netip.Addr]*list.Element
	lru     list.List // of *nameEntry, most recently used first
	evicted uint64
}

type nameEntry struct {
	addr    netip.Addr
	name    string
	expires time.Time
}

// newNameCache returns a cache of at most max addresses.
func newNameCache(max int) *NameCache {
	return &NameCache{max: max, byAddr: map[netip.Addr]*list.Element{}}
}

// Lookup returns the name that ip was last an answer for, if that answer's TTL has not run out at now.
func (c *NameCache) Lookup(ip netip.Addr, now time.Time) (string, bool) {
	ip = ip.Unmap()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byAddr[ip]
	if !ok {
		return "", false
	}
	e := el.Value.(*nameEntry)
	if !now.Before(e.expires) {
		c.lru.Remove(el)
		delete(c.byAddr, ip)
		return "", false
	}
	c.lru.MoveToFront(el)
	return e.name, true
}

// Len returns the number of addresses held, expired ones not yet dropped included.
func (c *NameCache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// put records that ip answered name at now, for ttl seconds bounded to [minNameTTL, maxNameTTL].
// When full, the least recently used address goes; NamesEvicted counts those that had not expired.
func (c *NameCache) put(ip netip.Addr, name string, ttl uint32, now time.Time) {
	d := min(max(time.Duration(ttl)*time.Second, minNameTTL), maxNameTTL)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byAddr[ip]; ok {
		e := el.Value.(*nameEntry)
		e.name, e.expires = name, now.Add(d)
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.max && c.lru.Len() > 0 {
		old := c.lru.Remove(c.lru.Back()).(*nameEntry)
		delete(c.byAddr, old.addr)
		if now.Before(old.expires) {
			c.evicted++
		}
	}
	c.byAddr[ip] = c.lru.PushFront(&nameEntry{addr: ip, name: name, expires: now.Add(d)})
}

func (c *NameCache) evictions() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.evicted
}

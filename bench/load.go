package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// loadResult is what one load run measured from the client side.
type loadResult struct {
	Requests int64   // completed with success
	Errors   int64   // failed or timed out
	Missed   int64   // fixed rate: sends the generator could not start on time (it was the bottleneck)
	Rate     float64 // completed per second
	P50, P99 time.Duration
	Sent     int64 // DNS: queries sent
}

var (
	wrkReqs    = regexp.MustCompile(`(\d+) requests in`)
	wrkRate    = regexp.MustCompile(`Requests/sec:\s+([\d.]+)`)
	wrkErrs    = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSockErr = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// runWrk saturates url with wrk on CPU 1 and returns its counts and its CPU seconds.
func runWrk(url string, conns int, d time.Duration, closeConn bool) (loadResult, float64, error) {
	args := []string{"-t1", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds()))}
	if closeConn {
		args = append(args, "-H", "Connection: close")
	}
	cmd := pinned(1, "wrk", append(args, url)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadResult{}, 0, fmt.Errorf("wrk: %v: %s", err, out)
	}
	var r loadResult
	if m := wrkReqs.FindSubmatch(out); m != nil {
		r.Requests, _ = strconv.ParseInt(string(m[1]), 10, 64)
	}
	if m := wrkRate.FindSubmatch(out); m != nil {
		r.Rate, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := wrkErrs.FindSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(string(m[1]), 10, 64)
		r.Errors += n
	}
	if m := wrkSockErr.FindSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(string(s), 10, 64)
			r.Errors += n
		}
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, cpu.Seconds(), nil
}

// fixedRate runs do at rate per second for d, open loop: latency is counted from when each call was
// due, so a slow server (or generator) shows in the tail instead of hiding it.
func fixedRate(rate float64, d time.Duration, workers int, do func(w int) error) loadResult {
	jobs := make(chan time.Time, workers*4)
	var ok, failed, missed atomic.Int64
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for due := range jobs {
				if err := do(w); err != nil {
					failed.Add(1)
					continue
				}
				ok.Add(1)
				lat[w] = append(lat[w], time.Since(due))
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	for i := 0; ; i++ {
		due := start.Add(time.Duration(i) * interval)
		if due.Sub(start) >= d {
			break
		}
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		select {
		case jobs <- due:
		default:
			missed.Add(1)
		}
	}
	close(jobs)
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	r := loadResult{Requests: ok.Load(), Errors: failed.Load(), Missed: missed.Load(), Rate: float64(ok.Load()) / d.Seconds()}
	if len(all) > 0 {
		r.P50, r.P99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

// saturate runs do from workers goroutines as fast as they go for d.
func saturate(d time.Duration, workers int, do func(w int) error) loadResult {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if do(w) != nil {
					failed.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return loadResult{Requests: ok.Load(), Errors: failed.Load(), Rate: float64(ok.Load()) / d.Seconds()}
}

// httpGetter returns a request function for the fixed-rate HTTP runs, and one that closes its idle
// connections.
func httpGetter(url string, keepAlive bool, workers int) (func(int) error, func()) {
	tr := &http.Transport{
		MaxIdleConnsPerHost: workers,
		DisableKeepAlives:   !keepAlive,
		TLSClientConfig:     &tls.Config{InsecureSkipVerify: true}, // the bench's self-signed certificate
	}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	get := func(int) error {
		resp, err := client.Get(url)
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	return get, tr.CloseIdleConnections
}

// dnsClient is W4's load generator: one connected UDP socket per worker, one query in flight on each,
// and its own account of every query, the ground truth of the client side: queries sent, and answers
// received, in time (the exchange succeeded: loadResult.Requests) or late (after the exchange's 1 s
// deadline: read by the worker's next exchange, or by settle).
type dnsClient struct {
	conns   []*net.UDPConn
	ids     []uint16
	pending []bool // the worker's last query got no answer in time: it may still come
	// answered: NOERROR answers received (in time or late); other: answers with another rcode.
	sent, answered, other atomic.Int64
}

func newDNSClient(workers int) (*dnsClient, error) {
	c := &dnsClient{conns: make([]*net.UDPConn, workers), ids: make([]uint16, workers), pending: make([]bool, workers)}
	for i := range c.conns {
		conn, err := net.Dial("udp", dnsAddr)
		if err != nil {
			c.close()
			return nil, err
		}
		c.conns[i] = conn.(*net.UDPConn)
	}
	return c, nil
}

func (c *dnsClient) close() {
	for _, conn := range c.conns {
		if conn != nil {
			conn.Close()
		}
	}
}

// query sends worker w's next query and waits (up to 1 s) for its answer.
func (c *dnsClient) query(w int) error {
	c.ids[w]++
	c.sent.Add(1)
	rcode, err := exchangeDNS(c.conns[w], c.ids[w], c.count)
	c.pending[w] = err != nil && rcode < 0
	if rcode >= 0 {
		c.count(rcode)
	}
	return err
}

func (c *dnsClient) count(rcode int) {
	if rcode == int(dnsmessage.RCodeSuccess) {
		c.answered.Add(1)
	} else {
		c.other.Add(1)
	}
}

// settle reads the late answers still on their way when the load stopped: if a worker's last query was
// not answered in time, every socket is read until wait has passed. Workers must be idle.
func (c *dnsClient) settle(wait time.Duration) {
	if !slices.Contains(c.pending, true) {
		return
	}
	deadline := time.Now().Add(wait)
	buf := make([]byte, 512)
	for w, conn := range c.conns {
		conn.SetReadDeadline(deadline)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				break
			}
			var p dnsmessage.Parser
			if h, err := p.Start(buf[:n]); err == nil && h.Response {
				c.count(int(h.RCode))
			}
		}
		c.pending[w] = false
	}
}

// reset starts a run's account.
func (c *dnsClient) reset() { c.sent.Store(0); c.answered.Store(0); c.other.Store(0) }

var dnsQueryName = dnsmessage.MustNewName(dnsName)

// exchangeDNS sends query id and reads until its answer: it returns the answer's rcode (-1: none within
// 1 s). The answers to earlier queries read meanwhile (late ones) go to late, if set.
func exchangeDNS(c *net.UDPConn, id uint16, late func(rcode int)) (int, error) {
	msg := dnsmessage.Message{Header: dnsmessage.Header{ID: id, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsQueryName, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	q, err := msg.Pack()
	if err != nil {
		return -1, err
	}
	if _, err := c.Write(q); err != nil {
		return -1, err
	}
	buf := make([]byte, 512)
	c.SetReadDeadline(time.Now().Add(time.Second))
	for {
		n, err := c.Read(buf)
		if err != nil {
			return -1, err
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil || !h.Response {
			continue
		}
		if h.ID != id {
			if late != nil {
				late(int(h.RCode))
			}
			continue
		}
		if h.RCode != dnsmessage.RCodeSuccess {
			return int(h.RCode), fmt.Errorf("rcode %v", h.RCode)
		}
		return 0, nil
	}
}

// dnsQuery asks once, to check the resolver is up.
func dnsQuery(addr string) (bool, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_, err = exchangeDNS(c.(*net.UDPConn), 1, nil)
	return true, err
}

func waitTCP(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

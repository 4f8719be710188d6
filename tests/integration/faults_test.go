package integration

// The fault and hostile-input suite: each TestFault* does one thing to the real agent (and collector) that
// an operator's bad day or a careless client would, checks what must hold, and adds a row to the table
// printed at the end of the run. `make faults` runs the long versions (DKEBPF_FAULTS_LONG=1).

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"
)

var faultsLong = os.Getenv("DKEBPF_FAULTS_LONG") == "1"

// faultRow is one line of the table: what was done and what came of it.
type faultRow struct {
	Case, Done                string
	Acked, Found, Lost, Dup   string
	Recovered, Result, Detail string
}

var faults struct {
	mu   sync.Mutex
	rows []faultRow
}

func addFault(t *testing.T, r faultRow) {
	r.Result = "ok"
	if t.Failed() {
		r.Result = "FAIL"
	}
	faults.mu.Lock()
	defer faults.mu.Unlock()
	faults.rows = append(faults.rows, r)
}

// printFaults prints the table (TestMain calls it) and writes it to $DKEBPF_FAULTS_REPORT if set.
func printFaults() {
	faults.mu.Lock()
	defer faults.mu.Unlock()
	if len(faults.rows) == 0 {
		return
	}
	sort.SliceStable(faults.rows, func(i, j int) bool { return faults.rows[i].Case < faults.rows[j].Case })
	var b bytes.Buffer
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "case\twhat was done\tacknowledged\tfound\tlost\tduplicated\trecovered in\tresult\tdetail")
	for _, r := range faults.rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Case, r.Done, r.Acked, r.Found, r.Lost, r.Dup, r.Recovered, r.Result, r.Detail)
	}
	w.Flush()
	fmt.Printf("\nfaults (long=%v):\n%s", faultsLong, b.String())
	if p := os.Getenv("DKEBPF_FAULTS_REPORT"); p != "" {
		_ = os.WriteFile(p, b.Bytes(), 0o644)
	}
}

// launchBareAgent runs datakit with no input on a fresh install dir and waits for its API; store, if set,
// replaces the [store] table of datakit.conf.
func launchBareAgent(t *testing.T, store string) *agent {
	t.Helper()
	a := launchAgent(t, "")
	if store != "" {
		a.kill()
		must(t, os.WriteFile(filepath.Join(a.dir, "conf.d", "datakit.conf"),
			[]byte(fmt.Sprintf("[http_api]\n  listen = %q\n[store]\n%s\n", a.addr, store)), 0o644))
		a.start()
	}
	a.waitPing(30 * time.Second)
	return a
}

// start runs datakit again on the agent's install dir and address.
func (a *agent) start() {
	a.t.Helper()
	a.done = make(chan struct{})
	a.cmd = exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", a.dir)
	a.cmd.Env = append(os.Environ(), a.env...)
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	must(a.t, a.cmd.Start())
	done := a.done
	go func() { a.cmd.Wait(); close(done) }()
}

// kill sends SIGKILL to the agent and waits for it to be gone.
func (a *agent) kill() {
	a.cmd.Process.Kill()
	<-a.done
}

// waitPing waits until the API answers and returns how long that took.
func (a *agent) waitPing(timeout time.Duration) time.Duration {
	a.t.Helper()
	start := time.Now()
	a.waitFor("the API", timeout, func() bool {
		resp, err := http.Get("http://" + a.addr + "/v1/ping")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return time.Since(start)
}

// storeLosses returns the points the agent's store evicted and lost to damage since it started.
func (a *agent) storeLosses() (evicted, damaged int64) {
	a.t.Helper()
	resp, err := http.Get("http://" + a.addr + "/v1/ping")
	must(a.t, err)
	defer resp.Body.Close()
	var ping struct {
		Content struct {
			Evicted int64 `json:"store_evicted_points"`
			Damaged int64 `json:"store_damaged_points"`
		} `json:"content"`
	}
	must(a.t, json.NewDecoder(resp.Body).Decode(&ping))
	return ping.Content.Evicted, ping.Content.Damaged
}

// postBatch posts body with a batch id and returns the status (0: no answer).
func (a *agent) postBatch(path, id string, body []byte) int {
	req, _ := http.NewRequest(http.MethodPost, "http://"+a.addr+path, bytes.NewReader(body))
	if id != "" {
		req.Header.Set("X-Batch-Id", id)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// countPoints returns how many times each value of the "key" tag of measurement occurs, querying the whole
// store in windows small enough for the query limit.
func (a *agent) countPoints(measurement string, from, to time.Time, step time.Duration) map[string]int {
	a.t.Helper()
	seen := map[string]int{}
	for s := from; !s.After(to); s = s.Add(step) {
		until := s.Add(step - 1)
		v := url.Values{"measurement": {measurement}, "since": {s.Format(time.RFC3339Nano)},
			"until": {until.Format(time.RFC3339Nano)}, "limit": {"100000"}}
		resp, err := http.Get("http://" + a.addr + "/v1/query?" + v.Encode())
		must(a.t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-Datakit-Truncated") != "" {
			a.t.Fatalf("query %s: %d (truncated %q) %.200s", measurement, resp.StatusCode, resp.Header.Get("X-Datakit-Truncated"), body)
		}
		for _, p := range decodeLP(a.t, body) {
			seen[p.Tags["key"]]++
		}
	}
	return seen
}

// vmHWM returns the peak resident memory of pid, in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	must(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// dupsAndFound sums a count map: points found, and extra copies.
func dupsAndFound(seen map[string]int) (found, dup int) {
	for _, n := range seen {
		found++
		dup += n - 1
	}
	return found, dup
}

func TestFaultAgentKilledMidWriteLosesAndDuplicatesNothingAcknowledged(t *testing.T) {
	a := launchBareAgent(t, "")
	const writers, perBatch = 4, 200
	batches := 50
	if faultsLong {
		batches = 500
	}
	base := time.Now().Add(-time.Minute).Truncate(time.Second)
	var acked, retried atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				var body bytes.Buffer
				for i := 0; i < perBatch; i++ {
					n := (w*batches+b)*perBatch + i
					fmt.Fprintf(&body, "fault_kill,key=%d v=%di %d\n", n, n, base.Add(time.Duration(n)*time.Microsecond).UnixNano())
				}
				id := fmt.Sprintf("w%d-b%d", w, b)
				for a.postBatch("/v1/write/metric", id, body.Bytes()) != 200 {
					retried.Add(1)
					time.Sleep(50 * time.Millisecond) // the agent is down: retry the same batch, same id
				}
				acked.Add(perBatch)
			}
		}()
	}
	for acked.Load() < writers*perBatch*int64(batches)/4 { // a quarter in: writes are in flight
		time.Sleep(time.Millisecond)
	}
	a.kill()
	a.start()
	recovered := a.waitPing(30 * time.Second)
	wg.Wait()

	seen := a.countPoints("fault_kill", base, base.Add(time.Duration(writers*batches*perBatch)*time.Microsecond), time.Duration(50000)*time.Microsecond)
	found, dup := dupsAndFound(seen)
	want := writers * batches * perBatch
	if int(acked.Load()) != want || found != want || dup != 0 {
		t.Errorf("acknowledged %d, found %d distinct, %d duplicated; want %d each and none", acked.Load(), found, dup, want)
	}
	addFault(t, faultRow{Case: "agent kill -9 mid-write", Done: fmt.Sprintf("%d writers × %d batches of %d, SIGKILL a quarter in, restart; clients retry with the same X-Batch-Id", writers, batches, perBatch),
		Acked: fmt.Sprint(acked.Load()), Found: fmt.Sprint(found), Lost: fmt.Sprint(int(acked.Load()) - found), Dup: fmt.Sprint(dup),
		Recovered: recovered.Round(10 * time.Millisecond).String(), Detail: fmt.Sprintf("%d posts retried", retried.Load())})
}

// damageFile overwrites n bytes in the middle of path with random bytes.
func damageFile(t *testing.T, path string, n int64) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	st, err := f.Stat()
	must(t, err)
	junk := make([]byte, n)
	rnd := rand.New(rand.NewPCG(5, 6))
	for i := range junk {
		junk[i] = byte(rnd.IntN(256))
	}
	_, err = f.WriteAt(junk, st.Size()/2/4096*4096)
	must(t, err)
}

// fillStore writes batches of points of measurement m with a "key" tag and 1 KiB of random text each, one
// second apart from base, and returns how many it wrote.
func fillStore(t *testing.T, a *agent, m string, base time.Time, batches, perBatch int) int {
	rnd := rand.New(rand.NewPCG(1, 1))
	pad := make([]byte, 1024)
	for b := 0; b < batches; b++ {
		var body bytes.Buffer
		for i := 0; i < perBatch; i++ {
			for j := range pad {
				pad[j] = byte('a' + rnd.IntN(26))
			}
			n := b*perBatch + i
			fmt.Fprintf(&body, "%s,key=%d pad=%q %d\n", m, n, pad, base.Add(time.Duration(n)*time.Millisecond).UnixNano())
		}
		if code := a.postBatch("/v1/write/metric", "", body.Bytes()); code != 200 {
			t.Fatalf("write: %d", code)
		}
	}
	return batches * perBatch
}

func TestFaultDamagedStorePagesAreSetAsideAndTheRestKept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(path string)
	}{
		{"a run of data pages", func(p string) { damageFile(t, p, 16<<10) }},
		{"both meta pages", func(p string) {
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			_, err = f.WriteAt(bytes.Repeat([]byte{0xAB}, 8192), 0)
			must(t, err)
			f.Close()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := launchBareAgent(t, "")
			base := time.Now().Add(-time.Hour).Truncate(time.Second)
			written := fillStore(t, a, "fault_damage", base, 200, 10)
			a.stop()
			path := filepath.Join(a.dir, "data", "points.db")
			tc.damage(path)

			start := time.Now()
			a.start()
			a.waitPing(60 * time.Second)
			recovered := time.Since(start)
			seen := a.countPoints("fault_damage", base, base.Add(time.Duration(written)*time.Millisecond), time.Minute)
			found, dup := dupsAndFound(seen)
			aside, _ := filepath.Glob(path + ".damaged-*")
			logLine := ""
			for _, l := range strings.Split(a.log.String(), "\n") {
				if strings.Contains(l, "is damaged") {
					logLine = l[strings.Index(l, "recovered"):]
				}
			}
			_, reported := a.storeLosses()
			if len(aside) != 1 || logLine == "" || dup != 0 || int64(written-found) != reported {
				t.Errorf("set aside %v, log %q, found %d of %d, %d duplicated, %d reported lost", aside, logLine, found, written, dup, reported)
			}
			if code := a.postBatch("/v1/write/metric", "", []byte("fault_damage,key=after v=1i")); code != 200 {
				t.Errorf("write after repair: %d", code)
			}
			addFault(t, faultRow{Case: "store: " + tc.name + " damaged", Done: "agent stopped, bytes overwritten, agent started",
				Acked: fmt.Sprint(written), Found: fmt.Sprint(found), Lost: fmt.Sprint(written - found), Dup: fmt.Sprint(dup),
				Recovered: recovered.Round(10 * time.Millisecond).String(), Detail: logLine})
		})
	}
}

func TestFaultFullDiskAnswers500AndKeepsWhatItHad(t *testing.T) {
	a := launchBareAgent(t, "")
	a.stop()
	data := filepath.Join(a.dir, "data")
	must(t, os.RemoveAll(data))
	must(t, os.MkdirAll(data, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", data).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", "-l", data).Run()
	a.start()
	a.waitPing(30 * time.Second)

	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	acked, refused := 0, 0
	for b := 0; b < 400 && refused < 3; b++ {
		var body bytes.Buffer
		rnd := rand.New(rand.NewPCG(uint64(b), 9))
		for i := 0; i < 20; i++ {
			pad := make([]byte, 1024)
			for j := range pad {
				pad[j] = byte('a' + rnd.IntN(26))
			}
			fmt.Fprintf(&body, "fault_disk,key=%d pad=%q %d\n", b*20+i, pad, base.Add(time.Duration(b*20+i)*time.Millisecond).UnixNano())
		}
		switch code := a.postBatch("/v1/write/metric", "", body.Bytes()); code {
		case 200:
			acked += 20
		case 500:
			refused++
		default:
			t.Fatalf("write: %d", code)
		}
	}
	seen := a.countPoints("fault_disk", base, base.Add(10*time.Second), time.Minute)
	found, dup := dupsAndFound(seen)
	if refused == 0 || found != acked || dup != 0 {
		t.Errorf("refused %d writes; acknowledged %d, found %d, %d duplicated", refused, acked, found, dup)
	}
	// Room again: writes are accepted without a restart.
	if out, err := exec.Command("mount", "-o", "remount,size=64m", data).CombinedOutput(); err != nil {
		t.Fatalf("remount: %v %s", err, out)
	}
	start := time.Now()
	for a.postBatch("/v1/write/metric", "", []byte("fault_disk,key=after v=1i")) != 200 {
		if time.Since(start) > 10*time.Second {
			t.Fatal("writes still refused with room on the disk")
		}
		time.Sleep(100 * time.Millisecond)
	}
	addFault(t, faultRow{Case: "disk full", Done: "store on an 8 MiB tmpfs, 20 KiB writes until 3 are refused, then room made",
		Acked: fmt.Sprint(acked), Found: fmt.Sprint(found), Lost: fmt.Sprint(acked - found), Dup: fmt.Sprint(dup),
		Recovered: time.Since(start).Round(time.Millisecond).String(), Detail: fmt.Sprintf("%d writes answered 500", refused)})
}

func TestFaultHostileBodiesAreBoundedInTimeAndMemory(t *testing.T) {
	a := launchBareAgent(t, "  path = \"data/points.db\"\n  max_size_mb = 12")
	pid := a.cmd.Process.Pid

	// One line with 80 000 tags.
	var line strings.Builder
	line.WriteString("fault_tags")
	for i := 0; i < 80000; i++ {
		fmt.Fprintf(&line, ",t%d=v", i)
	}
	line.WriteString(" f=1i\n")
	start := time.Now()
	code := a.postBatch("/v1/write/metric", "", []byte(line.String()))
	tagsTook := time.Since(start)
	if code != 200 || tagsTook > 5*time.Second {
		t.Errorf("80 000 tags: %d in %v", code, tagsTook)
	}
	addFault(t, faultRow{Case: "hostile: 80 000 tags on a line", Done: fmt.Sprintf("one %.1f MB line", float64(line.Len())/1e6),
		Acked: "1", Found: "-", Recovered: tagsTook.Round(time.Millisecond).String(), Detail: fmt.Sprintf("answered %d", code)})

	// 20 MB bodies of tiny points, one then three at once.
	body := func(k int, base time.Time) ([]byte, int) {
		var b bytes.Buffer
		n := 0
		for b.Len() < 20<<20 {
			fmt.Fprintf(&b, "fault_tiny,key=%d f=1i %d\n", k*10_000_000+n, base.Add(time.Duration(n)*time.Millisecond).UnixNano())
			n++
		}
		return b.Bytes(), n
	}
	before := vmHWM(t, pid)
	base := time.Now().Add(-time.Hour).Truncate(time.Second)
	b0, n0 := body(0, base)
	if code := a.postBatch("/v1/write/metric", "", b0); code != 200 {
		t.Fatalf("20 MB body: %d", code)
	}
	one := vmHWM(t, pid)
	var wg sync.WaitGroup
	bases := []time.Time{base.Add(10 * time.Minute), base.Add(20 * time.Minute), base.Add(30 * time.Minute)}
	bodies := make([][]byte, 3)
	ns := make([]int, 3)
	for i := range bodies {
		bodies[i], ns[i] = body(i+1, bases[i])
	}
	codes := make([]int, 3)
	for i := range bodies {
		wg.Add(1)
		go func() { defer wg.Done(); codes[i] = a.postBatch("/v1/write/metric", "", bodies[i]) }()
	}
	wg.Wait()
	three := vmHWM(t, pid)
	total := n0
	for i, c := range codes {
		if c != 200 {
			t.Errorf("concurrent 20 MB body %d: %d", i, c)
		}
		total += ns[i]
	}
	seen := a.countPoints("fault_tiny", base, base.Add(40*time.Minute), time.Minute)
	found, dup := dupsAndFound(seen)
	st, err := os.Stat(filepath.Join(a.dir, "data", "points.db"))
	must(t, err)
	// The store's bound held (12 MiB, and freed pages reused: the file within 10% and bbolt's 1 MiB step
	// of it), and memory per request stayed within 4× the body.
	if st.Size() > 12<<20*11/10+1<<20 {
		t.Errorf("points.db is %d bytes against max_size_mb = 12", st.Size())
	}
	if grow := one - before; grow > 4*int64(len(b0)) {
		t.Errorf("one 20 MB body took the agent's peak RSS up %d MB (from %d MB)", grow>>20, before>>20)
	}
	if grow := three - before; grow > 3*4*int64(len(b0)) {
		t.Errorf("three 20 MB bodies took the agent's peak RSS up %d MB", grow>>20)
	}
	tagsLeft := len(a.query("fault_tags", "2h")) // the 80 000-tag point is the oldest: evicted first
	lost := total + 1 - found - tagsLeft
	evicted, _ := a.storeLosses()
	detail := fmt.Sprintf("peak RSS %d → %d (one) → %d MB (three); points.db %d MB; evicted to stay under 12 MiB: %d points",
		before>>20, one>>20, three>>20, st.Size()>>20, evicted)
	if dup != 0 || int64(lost) != evicted {
		t.Errorf("%d duplicated; %d not found, %d counted as evicted", dup, lost, evicted)
	}
	addFault(t, faultRow{Case: "hostile: 20 MB bodies of tiny points", Done: "after the 80 000 tags, one, then three at once, max_size_mb = 12",
		Acked: fmt.Sprint(total + 1), Found: fmt.Sprint(found + tagsLeft), Lost: fmt.Sprintf("%d (evicted, counted)", lost), Dup: fmt.Sprint(dup), Detail: detail})
}

func TestFaultSlowAndManyClientsCannotStallTheAPI(t *testing.T) {
	a := launchBareAgent(t, "")
	// A body that never finishes: the agent closes the connection at its read timeout (30 s).
	c, err := net.Dial("tcp", a.addr)
	must(t, err)
	defer c.Close()
	start := time.Now()
	fmt.Fprintf(c, "POST /v1/write/metric HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nm f=1i")
	closed := make(chan time.Duration, 1)
	go func() {
		io.Copy(io.Discard, bufio.NewReader(c))
		closed <- time.Since(start)
	}()

	// 300 idle connections (the cap is 256): a client still gets an answer, once idle ones time out.
	var idle []net.Conn
	for i := 0; i < 300; i++ {
		if c, err := net.DialTimeout("tcp", a.addr, time.Second); err == nil {
			idle = append(idle, c)
		}
	}
	defer func() {
		for _, c := range idle {
			c.Close()
		}
	}()
	pingStart := time.Now()
	pingOK := false
	for time.Since(pingStart) < 30*time.Second {
		resp, err := (&http.Client{Timeout: 15 * time.Second}).Get("http://" + a.addr + "/v1/ping")
		if err == nil {
			resp.Body.Close()
			pingOK = resp.StatusCode == 200
			break
		}
	}
	pingTook := time.Since(pingStart)

	var slowTook time.Duration
	select {
	case slowTook = <-closed:
	case <-time.After(45 * time.Second):
		t.Error("a connection with an unfinished body is still open after 45 s")
	}
	if !pingOK || slowTook < 25*time.Second {
		t.Errorf("ping with 300 idle connections: ok=%v after %v; unfinished body closed after %v", pingOK, pingTook, slowTook)
	}
	addFault(t, faultRow{Case: "hostile: slow body, 300 idle connections", Done: "a body that never ends; 300 connections that send nothing",
		Acked: "-", Found: "-", Recovered: pingTook.Round(10 * time.Millisecond).String(),
		Detail: fmt.Sprintf("unfinished body closed after %v; a ping answered after %v", slowTook.Round(100*time.Millisecond), pingTook.Round(10*time.Millisecond))})
}

// flowWorkload runs exchanges on fresh TCP connections to a loopback server every 100 ms until stop is
// closed; it returns the server's port, the client's truth and the connections made.
func flowWorkload(t *testing.T, stop chan struct{}) (port int, cli *counted, conns *atomic.Int64, done chan struct{}) {
	port, _, srvWG := tcpServer(t, "tcp4", "127.0.0.1")
	cli, conns, done = &counted{}, &atomic.Int64{}, make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				srvWG.Wait()
				return
			case <-time.After(100 * time.Millisecond):
			}
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Error(err)
				return
			}
			conns.Add(1)
			if err := exchange(c, cli, 500+i%7*100, 2000+i%5*300); err != nil {
				t.Error(err)
			}
			c.Close()
		}
	}()
	return port, cli, conns, done
}

// clientFlows sums the client side of the workload's flows.
func clientFlows(a *agent, port int) func() flowSum {
	pid := strconv.Itoa(os.Getpid())
	return func() flowSum {
		return sumFlows(a.query("netflow", "1h", "pid:"+pid, "run:"+pid, "direction:outgoing", "dst_port:"+strconv.Itoa(port)))
	}
}

// netflowSelf returns the collectors' own counts of their netflow points: the largest value of each counter
// over their health points (a restarted collector counts from zero).
func (a *agent) netflowSelf() map[string]int64 {
	most := map[string]int64{}
	for _, p := range a.query("datakit_ebpf", "1h") {
		for _, f := range []string{"sent", "failed_posts", "dropped", "spooled", "resumed"} {
			most[f] = max(most[f], intField(p, "netflow_points_"+f))
		}
	}
	return most
}

// collectorSelf says netflowSelf.
func (a *agent) collectorSelf() string {
	most := a.netflowSelf()
	return fmt.Sprintf("collector's netflow points: sent %d, failed posts %d, dropped %d, spooled %d, resumed from spool %d",
		most["sent"], most["failed_posts"], most["dropped"], most["spooled"], most["resumed"])
}

func TestFaultAgentHungWhileTheCollectorCountsLosesAndDuplicatesNothing(t *testing.T) {
	a := startAgent(t, "")
	hung := 30 * time.Second
	if faultsLong {
		hung = 10 * time.Minute
	}
	stop := make(chan struct{})
	port, cli, conns, done := flowWorkload(t, stop)
	got := clientFlows(a, port)
	time.Sleep(3 * interval)
	must(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	time.Sleep(hung - 2*interval)
	before := cli.wrote.Load() // flushed by the collector before the agent resumes
	time.Sleep(2 * interval)
	must(t, a.cmd.Process.Signal(syscall.SIGCONT))
	resumed := time.Now()
	for got().written < before && time.Since(resumed) < time.Minute {
		time.Sleep(100 * time.Millisecond)
	}
	recovered := time.Since(resumed)
	time.Sleep(2 * interval)
	close(stop)
	<-done
	n := conns.Load()
	s := settle(t, a, "client side across the hang", totals{written: cli.wrote.Load(), read: cli.read.Load(), established: n, closed: n}, got)
	addFault(t, faultRow{Case: "agent hung (SIGSTOP) under a collector", Done: fmt.Sprintf("TCP exchanges every 100 ms; agent stopped %v, then resumed", hung),
		Acked: fmt.Sprintf("%d bytes, %d conns", cli.wrote.Load(), n), Found: fmt.Sprintf("%d bytes, %d conns", s.written, s.established),
		Lost: fmt.Sprint(max(0, cli.wrote.Load()-s.written)), Dup: fmt.Sprint(max(0, s.written-cli.wrote.Load())),
		Recovered: recovered.Round(100 * time.Millisecond).String(), Detail: a.collectorSelf()})
}

func TestFaultAgentKilledWhileTheCollectorBuffersLosesNothing(t *testing.T) {
	a := startAgent(t, "")
	stop := make(chan struct{})
	port, cli, conns, done := flowWorkload(t, stop)
	got := clientFlows(a, port)
	time.Sleep(2 * interval)
	// Hung first, so the collector holds a backlog; then killed: the collector, told by SIGTERM, cannot
	// reach it and spools what it holds to data/ebpf-spool.
	must(t, a.cmd.Process.Signal(syscall.SIGSTOP))
	time.Sleep(5 * interval)
	close(stop)
	<-done
	a.kill()
	spoolDir := filepath.Join(a.dir, "data", "ebpf-spool")
	deadline := time.Now().Add(20 * time.Second)
	var spooled []string
	for len(spooled) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
		spooled, _ = filepath.Glob(filepath.Join(spoolDir, "*.spool"))
	}
	if len(spooled) == 0 {
		t.Errorf("nothing spooled in %s", spoolDir)
	}
	// The collector exits on its own (SIGTERM from the dying agent): wait for it before restarting.
	time.Sleep(3 * time.Second)
	restart := time.Now()
	a.start()
	n := conns.Load()
	want := totals{written: cli.wrote.Load(), read: cli.read.Load(), established: n, closed: n}
	var recovered time.Duration
	s := settle(t, a, "client side across the kill", want, func() flowSum {
		g := got()
		if recovered == 0 && g.totals == want {
			recovered = time.Since(restart)
		}
		return g
	})
	// The spool was sent before the new collector loaded its programs; its first health point counts it.
	a.waitFor("the restarted collector's count of resumed points", firstPointTimeout, func() bool { return a.netflowSelf()["resumed"] > 0 })
	left, _ := filepath.Glob(filepath.Join(spoolDir, "*.spool"))
	if len(left) != 0 {
		t.Errorf("spool files left after the restart: %v", left)
	}
	addFault(t, faultRow{Case: "agent kill -9 while the collector buffers", Done: fmt.Sprintf("TCP exchanges; agent hung %v, then SIGKILL, restarted", 5*interval),
		Acked: fmt.Sprintf("%d bytes, %d conns", want.written, n), Found: fmt.Sprintf("%d bytes, %d conns", s.written, s.established),
		Lost: fmt.Sprint(max(0, want.written-s.written)), Dup: fmt.Sprint(max(0, s.written-want.written)),
		Recovered: recovered.Round(100 * time.Millisecond).String(), Detail: fmt.Sprintf("%d spool file(s); %s", len(spooled), a.collectorSelf())})
}

// runUntilReadyOrExit runs datakit on dir with env until its API answers at addr (it is then stopped) or it
// exits; it returns the exit error (nil: it answered) and its output.
func runUntilReadyOrExit(t *testing.T, dir, addr string, env ...string) (exited error, out string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(repoRoot, "datakit"), "run", "--dir", dir)
	cmd.Env = append(os.Environ(), env...)
	var buf syncBuffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case err := <-done:
			if err == nil {
				err = fmt.Errorf("exited 0")
			}
			return err, buf.String()
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("datakit neither answered nor exited in 30 s:\n%s", buf.String())
		case <-time.After(100 * time.Millisecond):
			if resp, err := http.Get("http://" + addr + "/v1/ping"); err == nil {
				resp.Body.Close()
				cmd.Process.Signal(os.Interrupt)
				<-done
				return nil, buf.String()
			}
		}
	}
}

func TestFaultConfigMistakesAreSaidAndDataKitsOwnConfigIsAccepted(t *testing.T) {
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	write := func(mainConf, inputConf string) string {
		dir := t.TempDir()
		must(t, os.MkdirAll(filepath.Join(dir, "conf.d", "host"), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, "conf.d", "datakit.conf"), []byte(mainConf), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "conf.d", "host", "ebpf.conf"), []byte(inputConf), 0o644))
		return dir
	}
	plain := fmt.Sprintf("[http_api]\n  listen = %q\n", addr)
	real, err := os.ReadFile(filepath.Join(repoRoot, "agent", "config", "testdata", "datakit-1.x.conf"))
	must(t, err)
	realConf := strings.Replace(string(real), `listen = "localhost:19529"`, fmt.Sprintf("listen = %q", addr), 1)
	for _, tc := range []struct {
		name, main, input string
		env               []string
		wantExit          bool
		want              string
	}{
		{"wildcard listen without a token", fmt.Sprintf("[http_api]\n  listen = \"0.0.0.0:%d\"\n", port), "", nil, true, "is not a loopback address"},
		{"misspelt input table", plain, "[[input.ebpf]]\n", nil, true, "did you mean [[inputs.ebpf]]?"},
		{"misspelt input name", plain, "[[inputs.epbf]]\n", nil, true, `did you mean "ebpf"?`},
		{"DataKit's own datakit.conf", realConf, "", nil, false, "dataway: unknown table, ignored"},
		{"DataKit's own input", plain, "[[inputs.cpu]]\n  percpu = false\n", nil, false, "inputs.cpu: unknown input, ignored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			exited, out := runUntilReadyOrExit(t, write(tc.main, tc.input), addr, tc.env...)
			if (exited != nil) != tc.wantExit || !strings.Contains(out, tc.want) {
				t.Errorf("exit %v (want exit %v), output lacks %q:\n%s", exited, tc.wantExit, tc.want, out)
			}
			result := "runs"
			if exited != nil {
				result = "refuses to start"
			}
			line := ""
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, tc.want) {
					line = strings.TrimSpace(l)
					break
				}
			}
			addFault(t, faultRow{Case: "config: " + tc.name, Done: "datakit run", Acked: "-", Found: "-",
				Recovered: time.Since(start).Round(10 * time.Millisecond).String(), Detail: result + ": " + line})
		})
	}
}

func TestFaultAWildcardListenWithATokenServesOnlyTokenHolders(t *testing.T) {
	port := freePort(t)
	a := &agent{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), log: &syncBuffer{}, env: []string{"ENV_HTTP_TOKEN=s3cret-token"}}
	a.dir = writeInstallDir(t, fmt.Sprintf("0.0.0.0:%d", port), ebpfConf(""))
	a.start()
	t.Cleanup(a.stop)
	a.waitPing(30 * time.Second)
	get := func(token string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+a.addr+"/v1/query?measurement=datakit_ebpf&since=5m", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != 401 {
		t.Errorf("query without the token: %d, want 401", code)
	}
	if code := a.postBatch("/v1/write/metric", "", []byte("m f=1i")); code != 401 {
		t.Errorf("write without the token: %d, want 401", code)
	}
	// The collector was given the token: its points arrive.
	start := time.Now()
	a.waitFor("the collector's points, sent with the token", firstPointTimeout, func() bool {
		code, body := get("s3cret-token")
		return code == 200 && strings.Contains(body, "datakit_ebpf")
	})
	addFault(t, faultRow{Case: "config: wildcard listen with ENV_HTTP_TOKEN", Done: "0.0.0.0 with a token; the ebpf input running",
		Acked: "-", Found: "-", Recovered: time.Since(start).Round(100 * time.Millisecond).String(),
		Detail: "without the token: 401 to query and write; the collector's points arrive with it"})
}

// timedConn is one connection of a workload: when it started and the bytes it wrote.
type timedConn struct {
	at    time.Time
	wrote int64
}

func TestFaultCollectorKilledMidIntervalIsRestartedAndDoublesNothing(t *testing.T) {
	a := startAgent(t, "")
	port, _, srvWG := tcpServer(t, "tcp4", "127.0.0.1")
	stop := make(chan struct{})
	var mu sync.Mutex
	var conns []timedConn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			c, err := net.Dial("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Error(err)
				return
			}
			cnt := &counted{}
			at := time.Now()
			if err := exchange(c, cnt, 700, 1500); err != nil {
				t.Error(err)
			}
			c.Close()
			mu.Lock()
			conns = append(conns, timedConn{at: at, wrote: cnt.wrote.Load()})
			mu.Unlock()
		}
	}()
	time.Sleep(2*interval + interval/2) // mid-interval
	before := a.collector()
	must(t, syscall.Kill(before.PID, syscall.SIGKILL))
	killed := time.Now()
	a.waitFor("the collector's restart", 60*time.Second, func() bool {
		s := a.collector()
		return s.PID != 0 && s.PID != before.PID && s.Starts == before.Starts+1
	})
	// The new collector counts from its first health point on.
	var counting time.Time
	a.waitFor("the restarted collector's first health point", firstPointTimeout, func() bool {
		for _, p := range a.query("datakit_ebpf", "1m") {
			if p.Time.After(killed) && (counting.IsZero() || p.Time.Before(counting)) {
				counting = p.Time
			}
		}
		return !counting.IsZero()
	})
	restarted := counting.Sub(killed)
	time.Sleep(3 * interval)
	close(stop)
	<-done
	srvWG.Wait()
	var total, after int64
	for _, c := range conns {
		total += c.wrote
		if c.at.After(counting) {
			after += c.wrote
		}
	}
	got := clientFlows(a, port)
	var s flowSum
	a.waitFor("the flows after the restart", 10*interval, func() bool { s = got(); return s.written >= after })
	time.Sleep(2 * interval)
	s = got()
	// What the killed collector had not flushed, and what passed while none ran, is lost and can be no more
	// than that; nothing may be counted twice; everything after the restart is counted.
	if s.written > total || s.written < after {
		t.Errorf("reported %d bytes written; the workload wrote %d, %d of them after the new collector counted", s.written, total, after)
	}
	addFault(t, faultRow{Case: "collector kill -9 mid-interval", Done: "TCP exchanges every 50 ms; SIGKILL to the collector 2.5 intervals in; the agent restarts it",
		Acked: fmt.Sprintf("%d bytes", total), Found: fmt.Sprintf("%d bytes", s.written), Lost: fmt.Sprintf("%d (the unflushed interval and the restart gap)", total-s.written),
		Dup: fmt.Sprint(max(0, s.written-total)), Recovered: restarted.Round(100 * time.Millisecond).String(),
		Detail: fmt.Sprintf("%d of the bytes were written after the new collector's first health point: all counted", after)})
}

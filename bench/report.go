package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func spread(xs []float64) string {
	if len(xs) == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f–%.0f", slices.Min(xs), slices.Max(xs))
}

// kept returns the runs of (workload, mode, config) that were not discarded, and how many were.
func kept(runs []run, w, mode, cfg string) ([]run, int) {
	var out []run
	dropped := 0
	for _, r := range runs {
		if r.Workload == w && r.Mode == mode && r.Config == cfg {
			if r.Discarded {
				dropped++
			} else {
				out = append(out, r)
			}
		}
	}
	return out, dropped
}

func values(rs []run, f func(run) float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = f(r)
	}
	return out
}

// perOp is x per request the load generator completed (0 without any).
func perOp(x float64, r run) float64 {
	if r.Load.Requests == 0 {
		return 0
	}
	return x / float64(r.Load.Requests)
}

func ms(d float64) string { return fmt.Sprintf("%.2f", d/float64(time.Millisecond)) }

// peerTable renders the peers' rows beside ours, for the workloads a peer ran on.
func peerTable(b *strings.Builder, ws []workload, runs []run) {
	var ran []peer
	for _, p := range peers {
		if slices.ContainsFunc(runs, func(r run) bool { return r.Config == p.Name }) {
			ran = append(ran, p)
		}
	}
	if len(ran)+len(peersLeftOut) == 0 {
		return
	}
	fmt.Fprintln(b)
	fmt.Fprintln(b, "Peers beside ours, in the same shuffled order (each pinned to CPU 1 with the load, attached before it, its "+
		"output to a file; CPU and peak RSS: the collector's for ours, the tool's for a peer; saw: what it reported, "+
		"per request the load completed, not a fidelity check):")
	fmt.Fprintln(b)
	for _, p := range ran {
		args, _ := p.args()
		for i, a := range args {
			if strings.Contains(a, " ") {
				args[i] = "'" + a + "'"
			}
		}
		fmt.Fprintf(b, "- %s (%s, %s): `%s`\n", p.Name, p.Workload, p.version(), strings.Join(args, " "))
	}
	for _, l := range peersLeftOut {
		fmt.Fprintf(b, "- %s\n", l)
	}
	fmt.Fprintln(b)
	fmt.Fprintln(b, "| workload | mode | config or peer | rate/s median | vs base | p50 ms | p99 ms | CPU % of a core | peak RSS MB | saw per request | what it saw | runs |")
	fmt.Fprintln(b, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
	for _, w := range ws {
		var names []string
		for _, p := range ran {
			if p.Workload == w.ID {
				names = append(names, p.Name)
			}
		}
		if len(names) == 0 {
			continue
		}
		for _, mode := range []string{"saturation", "half"} {
			base, _ := kept(runs, w.ID, mode, "base")
			baseRate := median(values(base, func(r run) float64 { return r.Load.Rate }))
			for _, cfg := range append(slices.Clone(configs), names...) {
				rs, dropped := kept(runs, w.ID, mode, cfg)
				if len(rs) == 0 {
					continue
				}
				rate := median(values(rs, func(r run) float64 { return r.Load.Rate }))
				vs, p50, p99, core, rss, saw, what := "–", "–", "–", "–", "–", "–", "–"
				if cfg != "base" {
					if baseRate > 0 {
						vs = fmt.Sprintf("%.3f", rate/baseRate)
					}
					core = fmt.Sprintf("%.1f", median(values(rs, func(r run) float64 { return r.CollectorCPU / r.Seconds * 100 })))
					rss = fmt.Sprintf("%.1f", slices.Max(values(rs, func(r run) float64 { return r.CollectorRSSMB })))
				}
				if mode == "half" {
					p50 = ms(median(values(rs, func(r run) float64 { return float64(r.Load.P50) })))
					p99 = ms(median(values(rs, func(r run) float64 { return float64(r.Load.P99) })))
				}
				if p, ok := peerNamed(cfg); ok {
					saw = fmt.Sprintf("%.2f", median(values(rs, func(r run) float64 { return perOp(float64(r.Seen), r) })))
					what = p.Saw
				} else if o, ok := oursSaw[w.ID]; ok && cfg == "all" {
					saw = fmt.Sprintf("%.2f", median(values(rs, func(r run) float64 { return perOp(float64(o.n(r)), r) })))
					what = o.what
				}
				fmt.Fprintf(b, "| %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %d (+%d discarded) |\n",
					w.ID, mode, cfg, rate, vs, p50, p99, core, rss, saw, what, len(rs), dropped)
			}
		}
	}
}

// report renders the markdown tables: performance, footprint, fidelity.
func report(ws []workload, runs []run, noise float64, took time.Duration) string {
	var b strings.Builder
	discarded := 0
	for _, r := range runs {
		if r.Discarded {
			discarded++
		}
	}
	fmt.Fprintf(&b, "### make bench, %s, %d runs in %s; %d discarded (other processes above %.2f cores)\n\n",
		time.Now().UTC().Format("2006-01-02"), len(runs), took.Round(time.Second), discarded, noise)
	fmt.Fprintln(&b, "`all` = `netflow` + `httpflow` (plain HTTP/1.x, parsed in netflow's cgroup_skb programs) + `httpflow-tls` "+
		"(OpenSSL uprobes on SSL_read/SSL_write/SSL_read_ex/SSL_write_ex entry and return, and SSL_free; Go programs' "+
		"crypto/tls.(*Conn).Read/Write/Close, uprobes at the entry and each return) + `bash` "+
		"(plugin ebpf-bash: a uretprobe on each bash binary's readline). "+
		"`netflow`: the network plugin alone, netflow and dnsflow (DNS packets of netflow's cgroup_skb programs, in every config; "+
		"`l7net_disabled = [\"httpflow\", \"httpflow-tls\"]`, no ebpf-bash). "+
		"`floor`: every hook of `all`, programs that return at once (each uprobe hit still pays its trap), so `netflow` can beat it on W3 and W6.")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| workload | mode | config | rate/s median | min–max | vs base | vs floor | p50 ms | p99 ms | server µs/op | runs |")
	fmt.Fprintln(&b, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, w := range ws {
		for _, mode := range []string{"saturation", "half"} {
			base, _ := kept(runs, w.ID, mode, "base")
			floor, _ := kept(runs, w.ID, mode, "floor")
			if len(base)+len(floor) == 0 {
				continue
			}
			baseRate := median(values(base, func(r run) float64 { return r.Load.Rate }))
			floorRate := median(values(floor, func(r run) float64 { return r.Load.Rate }))
			for _, cfg := range configs {
				rs, dropped := kept(runs, w.ID, mode, cfg)
				rates := values(rs, func(r run) float64 { return r.Load.Rate })
				rate := median(rates)
				ratio := func(ref float64) string {
					if ref == 0 || cfg == "base" {
						return "–"
					}
					return fmt.Sprintf("%.3f", rate/ref)
				}
				vsFloor := "–"
				if slices.Contains(measured, cfg) {
					vsFloor = ratio(floorRate)
				}
				p50, p99 := "–", "–"
				if mode == "half" {
					p50 = ms(median(values(rs, func(r run) float64 { return float64(r.Load.P50) })))
					p99 = ms(median(values(rs, func(r run) float64 { return float64(r.Load.P99) })))
				}
				cpu := median(values(rs, func(r run) float64 {
					if r.Load.Requests == 0 {
						return 0
					}
					return r.ServerCPU / float64(r.Load.Requests) * 1e6
				}))
				fmt.Fprintf(&b, "| %s %s | %s | %s | %.0f | %s | %s | %s | %s | %s | %.1f | %d (+%d discarded) |\n",
					w.ID, w.Name, mode, cfg, rate, spread(rates), ratio(baseRate), vsFloor, p50, p99, cpu, len(rs), dropped)
			}
		}
	}
	peerTable(&b, ws, runs)

	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "Collector footprint (medians; points and bytes: every measurement the config stores, self-metrics included; "+
		"events lost and map-full drops: the most of any run, netflow's and dnsflow's, plus httpflow's and bash's in `all`):")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| workload | mode | config | collector CPU s per 10k ops | collector % of a core | peak RSS MB | points/interval | bytes/interval | events lost | map-full drops |")
	fmt.Fprintln(&b, "|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
	for _, w := range ws {
		for _, mode := range []string{"saturation", "half"} {
			for _, cfg := range measured {
				rs, _ := kept(runs, w.ID, mode, cfg)
				if len(rs) == 0 {
					continue
				}
				per10k := median(values(rs, func(r run) float64 { return perOp(float64(r.CollectorCPU), r) * 1e4 }))
				core := median(values(rs, func(r run) float64 { return r.CollectorCPU / r.Seconds * 100 }))
				rss := slices.Max(values(rs, func(r run) float64 { return r.CollectorRSSMB }))
				pts := median(values(rs, func(r run) float64 { return float64(r.Points) / r.Intervals }))
				byt := median(values(rs, func(r run) float64 { return float64(r.Bytes) / r.Intervals }))
				lost := slices.Max(values(rs, func(r run) float64 { return float64(r.Lost) }))
				full := slices.Max(values(rs, func(r run) float64 { return float64(r.MapFull) }))
				fmt.Fprintf(&b, "| %s | %s | %s | %.4f | %.1f | %.1f | %.1f | %.0f | %.0f | %.0f |\n", w.ID, mode, cfg, per10k, core, rss, pts, byt, lost, full)
			}
		}
	}

	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "httpflow (config `all`; medians per run; per request: per request the load generator completed; "+
		"the uprobes are on the host's libssl and Go programs, so other processes' TLS counts too):")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| workload | mode | exchanges seen | exchanges per request | TLS uprobe hits per request | TLS calls per request | desyncs | unanswered |")
	fmt.Fprintln(&b, "|---|---|---:|---:|---:|---:|---:|---:|")
	for _, w := range ws {
		for _, mode := range []string{"saturation", "half"} {
			rs, _ := kept(runs, w.ID, mode, "all")
			if len(rs) == 0 {
				continue
			}
			ex := median(values(rs, func(r run) float64 { return float64(r.HTTPExchanges) }))
			exPer := median(values(rs, func(r run) float64 { return perOp(float64(r.HTTPExchanges), r) }))
			hits := median(values(rs, func(r run) float64 { return perOp(float64(r.TLSHits), r) }))
			calls := median(values(rs, func(r run) float64 { return perOp(float64(r.TLSCalls), r) }))
			desync := slices.Max(values(rs, func(r run) float64 { return float64(r.Desyncs) }))
			unans := slices.Max(values(rs, func(r run) float64 { return float64(r.Unanswered) }))
			fmt.Fprintf(&b, "| %s | %s | %.0f | %.2f | %.2f | %.2f | %.0f | %.0f |\n", w.ID, mode, ex, exPer, hits, calls, desync, unans)
		}
	}

	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "dnsflow (configs `netflow` and `all`) and bash (config `all`), medians per run; every process's queries "+
		"and every shell's lines, so other tenants' count too:")
	fmt.Fprintln(&b)
	fmt.Fprintln(&b, "| workload | mode | config | DNS queries seen | queries per request | timeouts | malformed | bash lines seen | lines per request |")
	fmt.Fprintln(&b, "|---|---|---|---:|---:|---:|---:|---:|---:|")
	for _, w := range ws {
		for _, mode := range []string{"saturation", "half"} {
			for _, cfg := range measured {
				rs, _ := kept(runs, w.ID, mode, cfg)
				if len(rs) == 0 {
					continue
				}
				q := median(values(rs, func(r run) float64 { return float64(r.DNSQueries) }))
				qPer := median(values(rs, func(r run) float64 { return perOp(float64(r.DNSQueries), r) }))
				to := slices.Max(values(rs, func(r run) float64 { return float64(r.DNSTimeouts) }))
				mal := slices.Max(values(rs, func(r run) float64 { return float64(r.DNSMalformed) }))
				lines, linesPer := "–", "–"
				if cfg == "all" {
					lines = fmt.Sprintf("%.0f", median(values(rs, func(r run) float64 { return float64(r.BashLines) })))
					linesPer = fmt.Sprintf("%.2f", median(values(rs, func(r run) float64 { return perOp(float64(r.BashLines), r) })))
				}
				fmt.Fprintf(&b, "| %s | %s | %s | %.0f | %.2f | %.0f | %.0f | %s | %s |\n", w.ID, mode, cfg, q, qPer, to, mal, lines, linesPer)
			}
		}
	}

	for _, cfg := range measured {
		fmt.Fprintln(&b)
		fmt.Fprintf(&b, "Fidelity (config %s, every run, ground truth from the workload itself):\n", cfg)
		fmt.Fprintln(&b)
		for _, w := range ws {
			var all []run
			for _, mode := range []string{"saturation", "half"} {
				rs, _ := kept(runs, w.ID, mode, cfg)
				all = append(all, rs...)
			}
			if len(all) == 0 {
				continue
			}
			tallies := tallyChecks(all)
			if len(tallies) == 0 {
				fmt.Fprintf(&b, "- %s: nothing to check in this config (no network traffic; bash runs in `all`)\n", w.ID)
				continue
			}
			for _, t := range tallies {
				var worst string
				if r := t.worst; r != nil {
					worst = fmt.Sprintf("; e.g. %s run %d: reported %d, truth %d", r.Mode, r.Rep, t.worstCheck.Got, t.worstCheck.Want)
					if r.Lost > 0 {
						worst += fmt.Sprintf(" (events lost in that run: %d)", r.Lost)
					}
				}
				name, exact, n := t.name, t.exact, t.total
				fmt.Fprintf(&b, "- %s %s: exact in %d of %d runs%s\n", w.ID, name, exact, n, worst)
			}
		}
	}
	return b.String()
}

// checkTally is one check over several runs: how many were exact, of how many, and the first run that was
// not (nil if none), with its check.
type checkTally struct {
	name         string
	exact, total int
	worst        *run
	worstCheck   check
}

// tallyChecks tallies the runs' checks by name, in order of appearance (a check may apply to one mode only).
func tallyChecks(runs []run) []checkTally {
	var out []checkTally
	at := map[string]int{}
	for i := range runs {
		for _, c := range runs[i].Checks {
			j, ok := at[c.What]
			if !ok {
				j = len(out)
				at[c.What] = j
				out = append(out, checkTally{name: c.What})
			}
			t := &out[j]
			t.total++
			if c.Got == c.Want {
				t.exact++
			} else if t.worst == nil {
				t.worst, t.worstCheck = &runs[i], c
			}
		}
	}
	return out
}

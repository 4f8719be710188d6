package run

import (
	"fmt"
	"io"
	"strings"

	"dkebpf/collector/bpf"
	"dkebpf/kernel"
)

// Check loads and attaches every plugin's programs as `run` would, collects nothing, and writes per plugin
// and part what runs on this kernel: its preferred hooks, a fallback, or off, and why. It says whether
// any plugin can run (datakit-ebpf check exits 0 then).
func Check(w io.Writer) bool {
	fmt.Fprintf(w, "kernel %s\n\n", kernel.Release())
	var parts []bpf.PartStatus
	plugins := map[string]string{} // plugin -> "" when it can run, else why not

	nf, err := bpf.OpenNetflow(bpf.Options{HTTP: true, TLS: true, DNS: true})
	if err != nil {
		plugins["ebpf-net"] = err.Error()
	} else {
		parts = append(parts, nf.Parts()...)
		plugins["ebpf-net"] = ""
		if !nf.TCP() && !nf.UDP() {
			plugins["ebpf-net"] = "neither netflow/tcp nor netflow/udp runs"
		}
		nf.Close()
	}
	b, err := bpf.OpenBash(bpf.Options{})
	if err != nil {
		plugins["ebpf-bash"] = err.Error()
	} else {
		parts = append(parts, b.Parts()...)
		plugins["ebpf-bash"] = ""
		b.Close()
	}
	pr, err := bpf.OpenProcess(bpf.Options{})
	if err != nil {
		plugins["ebpf-process"] = err.Error()
	} else {
		parts = append(parts, pr.Parts()...)
		plugins["ebpf-process"] = ""
		pr.Close()
	}

	for _, p := range parts {
		fmt.Fprintf(w, "%-16s %-9s %s\n", p.Plugin+"/"+p.Part, p.Mode, strings.Join(p.Hooks, ", "))
		for _, r := range p.Replaced {
			fmt.Fprintf(w, "%-26s instead of %s\n", "", r)
		}
		if p.Note != "" {
			fmt.Fprintf(w, "%-26s %s\n", "", p.Note)
		}
		if p.Mode == bpf.Off {
			fmt.Fprintf(w, "%-26s off: %s\n", "", p.Why)
		}
	}
	fmt.Fprintln(w)
	any := false
	for _, name := range []string{"ebpf-net", "ebpf-bash", "ebpf-process"} {
		if why := plugins[name]; why != "" {
			fmt.Fprintf(w, "%s: cannot run: %s\n", name, why)
			continue
		}
		any = true
		fmt.Fprintf(w, "%s: runs (%s)\n", name, needs(name, parts))
	}
	return any
}

// needs says what each measurement of a plugin rests on and whether it runs.
func needs(plugin string, parts []bpf.PartStatus) string {
	mode := map[string]bpf.Mode{}
	for _, p := range parts {
		mode[p.Plugin+"/"+p.Part] = p.Mode
	}
	on := func(parts ...string) string {
		m := bpf.Preferred
		for _, p := range parts {
			switch mode[p] {
			case bpf.Off, "":
				return "off (" + p + " is off)"
			case bpf.Fallback:
				m = bpf.Fallback
			}
		}
		return string(m)
	}
	switch plugin {
	case "ebpf-bash":
		return "bash lines: " + on("bash/readline") + "; new bash binaries at exec: " + on("bash/exec")
	case "ebpf-process":
		return "process_task, process_exit_failed and oom_kill: " + on("process/process")
	}
	return "netflow tcp: " + on("netflow/tcp") + "; netflow udp: " + on("netflow/udp") +
		"; dnsflow and httpflow: " + on("netflow/udp") + "; httpflow-tls: " + on("netflow/udp", "netflow/tls")
}

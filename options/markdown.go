package options

import (
	"fmt"
	"strings"
)

// Markdown is the table of every [[inputs.ebpf]] key for docs/agent.md (tested equal to it).
func Markdown() string {
	var b strings.Builder
	b.WriteString("| Key | ENV | Collector | Type | Default | Allowed | What |\n|---|---|---|---|---|---|---|\n")
	for i := range Table {
		o := &Table[i]
		if o.Key == "" {
			continue
		}
		to := "—"
		switch {
		case o.ChildEnv != "":
			to = "env `" + o.ChildEnv + "`"
		case o.Flag != "":
			to = "`--" + o.Flag + "`"
		}
		what := o.Usage
		if o.NotYet != "" {
			what += " (accepted, passed on and logged once: " + o.NotYet + " is not built yet)"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s | %s |\n", o.Key, code(o.Env), to, kindNames[o.Kind],
			o.defaultText(), o.allowedText(), what)
	}
	return b.String()
}

var kindNames = [...]string{"bool", "int", "number", "string", "address", "duration", "list", "ports", "CIDRs",
	"table", "array of tables", "list", "size"}

func code(names []string) string {
	if len(names) == 0 {
		return "—"
	}
	return "`" + strings.Join(names, "`, `") + "`"
}

func (o *Option) defaultText() string {
	switch {
	case o.AgentDefault != "" && o.AgentDefault == o.Unset:
		return fmt.Sprintf("`%s`: the collector's, `%s`", o.Unset, o.Default)
	case o.AgentDefault != "":
		return "`" + o.AgentDefault + "`"
	case o.Default != "":
		return "`" + o.Default + "` (the collector's)"
	}
	return "—"
}

func (o *Option) allowedText() string {
	var parts []string
	if len(o.Allowed) > 0 {
		parts = append(parts, "`"+strings.Join(o.Allowed, "` `")+"`")
	}
	if o.Min < o.Max {
		parts = append(parts, o.Range())
	}
	if o.MinF < o.MaxF {
		parts = append(parts, o.floatRange())
	}
	if o.MinDur > 0 {
		parts = append(parts, "≥ "+o.MinDur.String())
	}
	if o.MaxItems > 0 {
		parts = append(parts, fmt.Sprintf("at most %d", o.MaxItems))
	}
	if len(parts) == 0 {
		return "—"
	}
	return strings.Join(parts, "; ")
}

package bpf

import (
	"dkebpf/collector/flow"

	"encoding/binary"
	"reflect"
	"strings"
	"testing"

	"dkebpf/collector/bash"
	"dkebpf/collector/dnsflow"
	"dkebpf/collector/httpflow"
	"dkebpf/collector/netflow"
	"dkebpf/collector/process"
)

// TestGoMirrorsMatchTheCompiledStructs compares every Go mirror with its C twin, field by field.
func TestGoMirrorsMatchTheCompiledStructs(t *testing.T) {
	nf, bs, pr := NetflowObject(), BashObject(), ProcessObject()
	for cname, m := range map[string]struct {
		obj []byte
		val any
	}{
		"nf_tuple":   {nf, flow.Tuple{}},
		"nf_sock":    {nf, flow.Sock{}},
		"nf_tcp_rec": {nf, netflow.TCPRecord{}},
		"nf_udp_key": {nf, netflow.UDPKey{}},
		"nf_udp_val": {nf, netflow.UDPVal{}},
		"hf_event":   {nf, httpflow.Event{}},
		"hf_h2_rec":  {nf, httpflow.H2Record{}},
		"df_event":   {nf, dnsflow.Event{}},
		"df_key":     {nf, dnsflow.Key{}},
		"df_query":   {nf, dnsflow.Query{}},
		"df_acc":     {nf, dnsflow.Acc{}},
		"bash_line":  {bs, bash.Line{}},
		"bash_exec":  {bs, bash.Exec{}},
		"pr_key":     {pr, process.RawKey{}},
		"pr_counts":  {pr, process.RawCounts{}},
	} {
		checkMirror(t, m.obj, cname, m.val)
	}
}

func checkMirror(t *testing.T, obj []byte, cname string, goval any) {
	t.Helper()
	size, members, err := StructLayout(obj, cname)
	if err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeOf(goval)
	if got := binary.Size(goval); got != size {
		t.Errorf("%s: Go mirror %s has %d bytes, C has %d", cname, typ, got, size)
	}
	if typ.NumField() != len(members) {
		t.Errorf("%s: Go mirror has %d fields, C has %d (%v)", cname, typ.NumField(), len(members), members)
		return
	}
	off := 0
	for i, m := range members {
		f := typ.Field(i)
		if f.Name != "_" && !strings.EqualFold(f.Name, strings.ReplaceAll(m.Name, "_", "")) {
			t.Errorf("%s field %d: Go %s, C %s", cname, i, f.Name, m.Name)
		}
		if off != m.Offset {
			t.Errorf("%s.%s: Go offset %d, C offset %d", cname, m.Name, off, m.Offset)
		}
		off += binary.Size(reflect.New(f.Type).Elem().Interface())
	}
}

// TestGoConstantsMatchTheCompiledEnums compares every Go constant mirroring a C enum member (stat indexes,
// flags, directions, buffer sizes) with its value in the compiled object's BTF.
func TestGoConstantsMatchTheCompiledEnums(t *testing.T) {
	nf, bs, pr := NetflowObject(), BashObject(), ProcessObject()
	for _, m := range []struct {
		obj  []byte
		enum string
		want map[string]int64 // C member -> Go constant
	}{
		{nf, "nf_const", map[string]int64{"NF_COMM_LEN": int64(len(flow.Sock{}.Comm))}},
		{nf, "nf_dir", map[string]int64{"NF_DIR_OUT": flow.DirOut, "NF_DIR_IN": flow.DirIn}},
		{nf, "nf_stat", map[string]int64{"NF_STAT_RB_LOST": netflow.StatRingLost, "NF_STAT_SOCK_FULL": netflow.StatSockFull,
			"NF_STAT_UDP_FULL": netflow.StatUDPFull, "NF_STAT_SOCK_STALE": netflow.StatSockStale, "NF_STAT_MAX": netflow.StatMax}},
		{nf, "hf_const", map[string]int64{"HF_REQ_LEN": httpflow.ReqLen, "HF_HOST_LEN": httpflow.HostLen, "HF_EVENT_HEAD": httpflow.SizeHead, "HF_H2_CHUNK": httpflow.H2Chunk}},
		{nf, "hf_flag", map[string]int64{"HF_F_TLS": httpflow.FlagTLS, "HF_F_REQ_SPLIT": httpflow.FlagReqSplit}},
		{nf, "nf_dir", map[string]int64{"NF_DIR_OUT": httpflow.DirOut, "NF_DIR_IN": httpflow.DirIn}},
		{nf, "hf_stat", map[string]int64{"HF_STAT_RB_LOST": httpflow.StatRingLost, "HF_STAT_CONN_FULL": httpflow.StatConnFull,
			"HF_STAT_PIPELINE_FULL": httpflow.StatPipelineFull, "HF_STAT_DESYNC": httpflow.StatDesync,
			"HF_STAT_UNANSWERED": httpflow.StatUnanswered, "HF_STAT_TLS_HITS": httpflow.StatTLSHits,
			"HF_STAT_TLS_CALLS": httpflow.StatTLSCalls, "HF_STAT_LOST": httpflow.StatLost, "HF_STAT_H2_LOST": httpflow.StatH2Lost,
			"HF_STAT_SCRATCH_FULL": httpflow.StatScratchFull, "HF_STAT_MAX": httpflow.StatMax}},
		{nf, "hf_h2_flag", map[string]int64{"HF_H2_CLIENT": httpflow.H2FlagClient, "HF_H2_CLOSE": httpflow.H2FlagClose, "HF_H2_LOST": httpflow.H2FlagLost}},
		{nf, "df_const", map[string]int64{"DF_MSG_LEN": dnsflow.MsgLen, "DF_PORTS_MAX": DNSPortsMax, "DF_NAME_LEN": dnsflow.NameLen}},
		{nf, "df_flag", map[string]int64{"DF_F_EGRESS": dnsflow.FlagEgress, "DF_F_OWNER": dnsflow.FlagOwner, "DF_F_TCP_FIN": dnsflow.FlagTCPFin,
			"DF_F_NAMES": dnsflow.FlagNames}},
		{nf, "df_stat", map[string]int64{"DF_STAT_RB_LOST": dnsflow.StatRingLost, "DF_STAT_QUERIES": dnsflow.StatQueries,
			"DF_STAT_ANSWERS": dnsflow.StatAnswers, "DF_STAT_RETRIED": dnsflow.StatRetried, "DF_STAT_INFLIGHT_FULL": dnsflow.StatInFlightFull,
			"DF_STAT_AGG_FULL": dnsflow.StatAggFull, "DF_STAT_MAX": dnsflow.StatMax}},
		{bs, "bash_const", map[string]int64{"BASH_LINE_LEN": bash.LineLen, "BASH_COMM_LEN": bash.CommLen, "BASH_LINE_HEAD": bash.SizeHead}},
		{bs, "bash_stat", map[string]int64{"BASH_STAT_RB_LOST": bash.StatRBLost, "BASH_STAT_EXEC_LOST": bash.StatExecLost, "BASH_STAT_MAX": bash.StatMax}},
		{pr, "pr_const", map[string]int64{"PR_COMM_LEN": process.CommLen}},
		{pr, "pr_stat", map[string]int64{"PR_STAT_FULL": process.StatFull, "PR_STAT_MAX": process.StatMax}},
	} {
		got, err := EnumValues(m.obj, m.enum)
		if err != nil {
			t.Error(err)
			continue
		}
		for member, want := range m.want {
			if v, ok := got[member]; !ok || v != want {
				t.Errorf("enum %s: %s = %d (present %v), Go mirror %d", m.enum, member, v, ok, want)
			}
		}
		// Every member but the placeholders has a mirror: a new one must get one.
		for member := range got {
			if _, mirrored := m.want[member]; !mirrored && member != "NF_DIR_UNKNOWN" {
				t.Errorf("enum %s: %s has no Go mirror in this test", m.enum, member)
			}
		}
	}
}

// TestDNSOffsetsMatchTheCompiledStructs checks the offsets the DNS counts' reader uses without a mirror.
func TestDNSOffsetsMatchTheCompiledStructs(t *testing.T) {
	nf := NetflowObject()
	_, members, err := StructLayout(nf, "df_key")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.Name == "epoch" && m.Offset != dfKeyEpoch {
			t.Errorf("df_key.epoch at %d, dfKeyEpoch %d", m.Offset, dfKeyEpoch)
		}
	}
	if size, _, err := StructLayout(nf, "df_acc"); err != nil || size != dfAccSize {
		t.Errorf("df_acc: %d bytes (%v), dfAccSize %d", size, err, dfAccSize)
	}
	if _, members, err := StructLayout(nf, "df_query"); err != nil || members[0].Name != "ts_ns" || members[0].Offset != dfQueryTsNs {
		t.Errorf("df_query: %v (%v), dfQueryTsNs %d", members, err, dfQueryTsNs)
	}
}

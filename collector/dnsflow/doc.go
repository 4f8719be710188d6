// Package dnsflow turns what the kernel saw of client sockets' DNS into DataKit's dnsflow points. The
// kernel pairs most UDP queries with their answers itself and counts them per key (struct df_key), which
// Plugin.Flush reads; the rest comes as packets (struct df_event), which the Tracker decodes, reassembles
// (DNS over TCP), parses, matches and aggregates per interval. It also keeps the answers' addresses
// (NameCache), for netflow's dst_domain.
//
// Contract (ref §3.2): one point per (flow, qname, qtype, rcode) and interval, measurement "dnsflow", with
// DataKit's tags (family, direction=outgoing, transport, src/dst ip, ip type and port, client/server ip and
// port, conn_side=client) and fields rcode (-1: no answer), count, latency (mean ns) and latency_max (ns).
// src is always the client: the kernel sees the client's socket, so DataKit's guess of which side is local
// (swapping src and dst) is not needed. A port tag is the port's number when it is a DNS server port
// (Config.Ports), else "*".
//
// Differences from DataKit, which capture packets and miscounts (ref §3.2 OBSERVED):
//   - each query counts once, when it is answered or times out (DataKit also adds a zero sample per query);
//   - latency is the answer's kernel timestamp minus the query's, both taken at the socket;
//   - points also carry qname, qtype, rcode_name (NOERROR, NXDOMAIN, ..., TIMEOUT for rcode -1: it keeps
//     points of one name with different rcodes apart as series), pid and process_name (as netflow: pid "0"
//     and an empty process_name, which the encoder leaves out, when the owner is unknown) and netns when known;
//   - a retry with the same ID while the first query is in flight reports the first as unanswered;
//   - DNS over TCP is reassembled across segments, so pipelined and split messages are counted;
//   - loopback resolvers (127.0.0.53, dnsmasq) are kept;
//   - the name cache expires entries after their TTL (bounded, see NameCache) and names an address by
//     the question, not the first CNAME.
package dnsflow

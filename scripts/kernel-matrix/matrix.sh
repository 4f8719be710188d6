#!/usr/bin/env bash
# make test-kernels: one datakit-ebpf binary, built once here, run on Debian 5.10, 6.1, 6.1-rt and 6.12
# under qemu and on this host, twice each: with the preferred hooks, and with every hook that has a
# fallback refused (DKEBPF_REFUSE_HOOKS, as a refusing kernel would), so each fallback is proven exact.
# Prints one line per kernel and run: the hooks each part used, pass or fail per test case, and kernel
# warnings in the serial log. Exits non-zero if any case fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$root/build/kernel-matrix}
tests=${TESTS:-TestNetflow|TestFaultMapFullNetflow|TestHTTPFlowGoClientAndServer|TestHTTPFlowGoCryptoTLSClientAndServer|TestHTTPFlowGoCryptoTLSWritesFromGrowingStacks|TestHTTPFlowHTTP2OverGoCryptoTLS|TestHTTPFlowHTTP2OverGoCryptoTLSSessionStarts|TestHTTPFlowGRPCUnaryAndStreaming|TestDNSFlowGoResolverAndServer|TestDNSFlowSurvivesMalformedPackets|TestProcessCountsEveryForkThreadExecAndExit|TestProcessReportsOOMKill}
interval=${GUEST_INTERVAL:-1s}
modes=${MODES:-preferred fallbacks}
# Every hook with a fallback, down to the last rung of each ladder (collector/bpf, README "Fallbacks"):
# tracepoints classic, TCP live counters and start-up walk by programs the collector runs (nf_live,
# nf_seed_walk), UDP owners from cgroup_skb egress.
refuse=${FALLBACK_REFUSE:-tp_btf/*,raw_tp/inet_sock_set_state,raw_tp/sock_send_length,raw_tp/sock_recv_length,raw_tp/sched_process_exec,raw_tp/signal_deliver,kprobe/*,iter/*}
mkdir -p "$out"

"$here/install-deps.sh"
mapfile -t kernels < <("$here/fetch-kernels.sh" | grep -E -- "${KERNELS:-.}")

# The guest payload: busybox, the static binaries, the compiled (static) integration tests.
(cd "$root" && CGO_ENABLED=0 go test -c -o "$out/integration.test" ./tests/integration)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,proc,sys,dev,tmp,test/externals}
cp /bin/busybox "$stage/bin/busybox"
cp "$here/init.sh" "$stage/init"
cp "$root/datakit" "$stage/test/datakit"
cp "$root/externals/datakit-ebpf" "$stage/test/externals/datakit-ebpf"
cp "$out/integration.test" "$stage/test/integration.test"
# The process workload, built here: the guest has no compiler.
cc -static -O2 -Wall -o "$stage/test/dkprocwork" "$root/tests/integration/testdata/procwork.c" -lpthread
printf 'INTERVAL=%s\nTESTS="%s"\nTEST_TIMEOUT=%s\nMODES="%s"\nFALLBACK_REFUSE="%s"\n' \
	"$interval" "$tests" "${TEST_TIMEOUT:-720}" "$modes" "$refuse" >"$stage/test/env"
for b in "$stage/test/datakit" "$stage/test/externals/datakit-ebpf" "$stage/test/integration.test" "$stage/test/dkprocwork"; do
	if ! file "$b" | grep -q 'statically linked'; then
		echo "kernel-matrix: $b is not statically linked" >&2
		exit 1
	fi
done
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initramfs.cpio.gz"

# summarize <kernel> <mode> <log>: one line for the table, from the lines "@@<mode> ..." of the log.
summarize() {
	local kernel=$1 mode=$2 log=$3 hooks cases warnings rc
	# Each part and the hooks it used: "tcp[tp_btf/inet_sock_set_state raw_tp(nf_live) iter/tcp]".
	hooks=$(grep -a "^@@$mode HOOKS " "$log" | grep -ao 'msg="\(netflow/[a-z]*\|bash/[a-z]*\|process/[a-z]*\): [^"]*' |
		awk '{
			sub(/^msg="/, ""); part = $0; sub(/:.*/, "", part); sub(/^netflow\//, "", part)
			if ($0 ~ /: OFF/) { printf "%s[OFF] ", part; next }
			h = $0; sub(/.*; hooks: /, "", h); sub(/ \(fallback for .*/, "", h); sub(/; no socket hook.*/, "", h)
			gsub(/, run by the collector/, "", h); gsub(/\(nf_socks\)/, "", h)
			n = split(h, hs, /, /); out = ""; uprobes = 0
			for (i = 1; i <= n; i++) if (hs[i] ~ / (attached|loaded)$/) {
				x = hs[i]; sub(/ (attached|loaded)$/, "", x)
				if (x ~ /^uprobe\//) { uprobes++; continue }
				out = out (out == "" ? "" : " ") x
			}
			if (uprobes) out = out (out == "" ? "" : " ") uprobes " uprobes"
			if ($0 ~ /no socket hook for UDP owners/) out = out " owners-at-egress"
			printf "%s[%s] ", part, out
		}')
	cases=$(grep -a "^@@$mode " "$log" | grep -aoE -- '--- (PASS|FAIL): Test[A-Za-z0-9]+(/[A-Za-z0-9_]+)?' | sort -u |
		sed -E 's/--- (PASS|FAIL): Test(.*)/\2=\1/' | paste -sd' ')
	rc=$(grep -ao "^@@$mode TEST-EXIT=[0-9]*" "$log" | tail -1 | cut -d= -f2)
	warnings=$(grep -acE 'WARNING:|BUG:|Oops|Kernel panic|general protection|double fault' "$log" || true)
	printf '%-26s %-9s rc=%-3s %s| %s | kernel warnings: %s\n' "$kernel" "$mode" "${rc:-none}" "$hooks" "${cases:-no cases ran}" "$warnings"
}

# The guests, PARALLEL at a time (default 2): a guest spends most of its time waiting on the tests' intervals
# (qemu uses about a third of a core), so two share this machine's two cores without slowing each other much.
run_guest() { # <pkg> <vmlinuz>: writes <pkg>.rc: the guest's exit code and its seconds
	local start rc
	start=$(date +%s)
	"$here/run-kernel.sh" "$2" "$out/initramfs.cpio.gz" "$out/$1.log"
	rc=$?
	echo "$rc $(($(date +%s) - start))" >"$out/$1.rc"
}
rm -f "$out"/*.rc
set +e
for line in "${kernels[@]}"; do
	while [ "$(jobs -rp | wc -l)" -ge "${PARALLEL:-2}" ]; do wait -n; done
	run_guest "${line%% *}" "${line#* }" &
done
wait
set -e

fail=0
results=()
for line in "${kernels[@]}"; do
	pkg=${line%% *}
	read -r rc secs <"$out/$pkg.rc"
	[ "$rc" -eq 0 ] || fail=1
	[ "$rc" -eq 0 ] || echo "${pkg#linux-image-}: guest exit $rc (124: timeout, 125: no result)"
	for mode in $modes; do
		results+=("$(summarize "${pkg#linux-image-}" "$mode" "$out/$pkg.log")")
		echo "${results[-1]}"
	done
	echo "  (${secs}s)"
done

# The host, with the same binaries and tests (HOST=0 skips it).
[ "${HOST:-1}" = 1 ] || { printf '%s\n' "${results[@]}"; exit $fail; }
log="$out/host.log"
: >"$log"
for mode in $modes; do
	set +e
	(
		if [ "$mode" = fallbacks ]; then export DKEBPF_REFUSE_HOOKS="$refuse"; else unset DKEBPF_REFUSE_HOOKS; fi
		{
			"$root/externals/datakit-ebpf" run --enabled ebpf-net,ebpf-bash --l7net-enabled httpflow,httpflow-tls --interval 60s --datakit-apiserver 127.0.0.1:9 2>&1 &
			pid=$!
			sleep 2
			kill $pid
			wait $pid
		} | sed 's/^/HOOKS /'
		DKEBPF_ROOT=$root "$out/integration.test" -test.v -test.count=1 -test.run "$tests" 2>&1
		echo "TEST-EXIT=$?"
	) | sed "s/^/@@$mode /" >>"$log"
	set -e
	grep -q "^@@$mode TEST-EXIT=0" "$log" || fail=1
	results+=("$(summarize "host $(uname -r)" "$mode" "$log")")
done

echo
echo "kernel matrix ($(date -u +%F), logs in $out):"
printf '%s\n' "${results[@]}"
exit $fail

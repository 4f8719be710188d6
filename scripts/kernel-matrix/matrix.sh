#!/usr/bin/env bash
# make test-kernels: one datakit-ebpf binary, built once here, run on Debian 5.10, 6.1, 6.1-rt and 6.12
# under qemu and on this host. Prints one line per kernel: the hooks each netflow part attached, pass or
# fail per test case, and kernel warnings in the serial log. Exits non-zero if any case fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${OUT:-$root/build/kernel-matrix}
tests=${TESTS:-TestNetflow|TestHTTPFlowGoClientAndServer|TestDNSFlowGoResolverAndServer|TestDNSFlowSurvivesMalformedPackets}
interval=${GUEST_INTERVAL:-1s}
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
printf 'INTERVAL=%s\nTESTS="%s"\nTEST_TIMEOUT=%s\n' "$interval" "$tests" "${TEST_TIMEOUT:-480}" >"$stage/test/env"
for b in "$stage/test/datakit" "$stage/test/externals/datakit-ebpf" "$stage/test/integration.test"; do
	if ! file "$b" | grep -q 'statically linked'; then
		echo "kernel-matrix: $b is not statically linked" >&2
		exit 1
	fi
done
(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$out/initramfs.cpio.gz"

# summarize <kernel> <log> <rc>: one line for the table.
summarize() {
	local kernel=$1 log=$2 rc=$3 hooks cases warnings
	hooks=$(grep -ao 'msg="\(netflow/[a-z]*\|httpflow[a-z-]*\|dnsflow\|bash/[a-z]*\): [^"]*' "$log" | sort -u | sed -E 's/msg="(netflow\/)?//; s/; hooks: / [/; s/ attached//g; s/ \(fallback for /] instead of /; s/: not supported by this kernel//; s/\)$//' |
		sed -E '/instead of/!s/$/]/' | paste -sd' ')
	cases=$(grep -aoE -- '--- (PASS|FAIL): Test[A-Za-z]+(/[A-Za-z0-9_]+)?' "$log" | sort -u |
		sed -E 's/--- (PASS|FAIL): Test(.*)/\2=\1/' | paste -sd' ')
	warnings=$(grep -acE 'WARNING:|BUG:|Oops|Kernel panic|general protection|double fault' "$log" || true)
	printf '%-34s rc=%-3s %s | %s | kernel warnings: %s\n' "$kernel" "$rc" "$hooks" "${cases:-no cases ran}" "$warnings"
}

fail=0
results=()
for line in "${kernels[@]}"; do
	pkg=${line%% *} vmlinuz=${line#* }
	log="$out/$pkg.log"
	start=$(date +%s)
	set +e
	"$here/run-kernel.sh" "$vmlinuz" "$out/initramfs.cpio.gz" "$log"
	rc=$?
	set -e
	[ "$rc" -eq 0 ] || fail=1
	results+=("$(summarize "${pkg#linux-image-}" "$log" "$rc") ($(($(date +%s) - start))s)")
	echo "${results[-1]}"
done

# The host, with the same binaries and tests (HOST=0 skips it).
[ "${HOST:-1}" = 1 ] || { printf '%s\n' "${results[@]}"; exit $fail; }
log="$out/host.log"
set +e
{
	"$root/externals/datakit-ebpf" run --enabled ebpf-net --interval 60s --datakit-apiserver 127.0.0.1:9 2>&1 &
	pid=$!
	sleep 2
	kill $pid
	wait $pid
	DKEBPF_ROOT=$root "$out/integration.test" -test.v -test.count=1 -test.run "$tests"
} >"$log" 2>&1
rc=$?
set -e
[ "$rc" -eq 0 ] || fail=1
results+=("$(summarize "host $(uname -r)" "$log" "$rc")")

echo
echo "kernel matrix ($(date -u +%F), logs in $out):"
printf '%s\n' "${results[@]}"
exit $fail

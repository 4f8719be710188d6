#!/bin/busybox sh
# /init of the kernel-matrix guest: mount what the collector needs, then for each mode (the preferred
# hooks, and every hook that has a fallback refused) report which hooks the collector uses and run the
# in-guest integration tests. Every line of a mode is prefixed "@@<mode> "; then power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
. /test/env
echo "@@GUEST-UP kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)"

cd /test
rc=0
for mode in $MODES; do
	if [ "$mode" = fallbacks ]; then export DKEBPF_REFUSE_HOOKS="$FALLBACK_REFUSE"; else unset DKEBPF_REFUSE_HOOKS; fi
	{
		# The collector's own start-up report: one line per part, each hook and whether it attached.
		./externals/datakit-ebpf run --enabled ebpf-net,ebpf-bash,ebpf-process --l7net-enabled httpflow,httpflow-tls --interval 60s --datakit-apiserver 127.0.0.1:9 >/tmp/hooks.log 2>&1 &
		pid=$!
		for i in $(seq 120); do
			grep -q "collector running" /tmp/hooks.log && break
			kill -0 $pid 2>/dev/null || break
			sleep 0.5
		done
		kill $pid 2>/dev/null
		wait $pid
		sed 's/^/HOOKS /' /tmp/hooks.log
		HOME=/tmp DKEBPF_ROOT=/test DKEBPF_TEST_INTERVAL=$INTERVAL DKEBPF_PROCWORK=/test/dkprocwork timeout $TEST_TIMEOUT ./integration.test -test.v -test.count=1 -test.run "$TESTS"
		echo $? >/tmp/rc
	} 2>&1 | sed "s/^/@@$mode /"
	echo "@@$mode TEST-EXIT=$(cat /tmp/rc) uptime=$(cut -d' ' -f1 /proc/uptime)"
	[ "$(cat /tmp/rc)" = 0 ] || rc=1
done
echo "@@TEST-EXIT=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
reboot -f

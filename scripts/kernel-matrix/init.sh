#!/bin/busybox sh
# /init of the kernel-matrix guest: mount what the collector needs, report which hooks it attaches,
# run the in-guest integration tests, print the result and power off.
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
# The collector's own start-up report: one line per part, each hook and whether it attached.
./externals/datakit-ebpf run --enabled ebpf-net,ebpf-bash --l7net-enabled httpflow,httpflow-tls --interval 60s --datakit-apiserver 127.0.0.1:9 >/tmp/hooks.log 2>&1 &
pid=$!
for i in $(seq 120); do
	grep -q "collector running" /tmp/hooks.log && break
	kill -0 $pid 2>/dev/null || break
	sleep 0.5
done
kill $pid 2>/dev/null
wait $pid
sed 's/^/@@HOOKS /' /tmp/hooks.log

HOME=/tmp DKEBPF_ROOT=/test DKEBPF_TEST_INTERVAL=$INTERVAL timeout $TEST_TIMEOUT ./integration.test -test.v -test.count=1 -test.run "$TESTS"
echo "@@TEST-EXIT=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
reboot -f

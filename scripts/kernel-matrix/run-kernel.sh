#!/usr/bin/env bash
# Boots one kernel under qemu (TCG: this host's KVM cannot run stock kernels) with an initramfs and
# writes its serial log. Usage: run-kernel.sh <vmlinuz> <initramfs.cpio.gz> <log>
# Exit: the guest test's exit code; 124 on timeout; 125 if the guest never reported a result.
set -uo pipefail
vmlinuz=$1 initrd=$2 log=$3
timeout --foreground -k 10 "${TIMEOUT:-2100}" \
	qemu-system-x86_64 -accel tcg,thread=multi -cpu max -m "${MEM:-1G}" -smp "${SMP:-2}" \
	-nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 loglevel=5" </dev/null 2>&1 |
	tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g; s/\x1bc//g' >"$log"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 124 ] && exit 124
code=$(grep -ao '@@TEST-EXIT=[0-9]*' "$log" | tail -1 | cut -d= -f2)
[ -n "$code" ] || exit 125
exit "$code"

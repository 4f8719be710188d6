#!/usr/bin/env bash
# What `make test-kernels` needs beyond scripts/install-deps.sh: qemu from bookworm-backports (bookworm's 7.2
# corrupts guests under TCG), busybox-static and cpio for the initramfs. Idempotent.
set -euo pipefail

qemu_ok() {
	local v
	v=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) || return 1
	dpkg --compare-versions "$v" ge "1:8"
}
need=()
for p in busybox-static cpio xz-utils zstd; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -eq 0 ] && qemu_ok; then
	exit 0
fi
"$(dirname "$0")/../install-deps.sh" # adds bookworm-backports if missing
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need[@]}"
qemu_ok || apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
qemu_ok || { echo "kernel-matrix: qemu-system-x86 >= 8 is not installed" >&2; exit 1; }

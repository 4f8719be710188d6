#!/usr/bin/env bash
# Installs what building and testing need on Debian bookworm. Idempotent: a
# machine that already has everything is left untouched and no network is used.
set -euo pipefail

# chromium: the local page's browser test (tests/integration/view_test.go) drives it headless.
# gcc, libssl-dev, ruby, stunnel4, haproxy: OpenSSL servers and TLS proxies of the httpflow tests (a threaded C
# server, tests/integration/testdata/tls_server.c; Ruby's; stunnel and HAProxy in front of nginx).
# android-libboringssl-dev, android-boringssl: the same C server on BoringSSL, and BoringSSL's own client.
# libbpf-tools: exitsnoop and execsnoop beside ebpf-process in its test (tests/integration/process_test.go).
pkgs=(clang llvm gcc libssl-dev libbpf-tools android-libboringssl-dev android-boringssl ruby stunnel4 haproxy bpftool libelf-dev zlib1g-dev libzstd-dev make pkg-config iproute2 nginx-light curl python3 openssl dnsmasq-base util-linux etcd-server podman runc mmdebstrap uidmap netavark catatonit nftables victoria-metrics influxdb chromium)
# libbpf 1.4 headers and static library come from bookworm-backports.
backports=(libbpf-dev)

need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
libbpf_ok() {
	local v
	v=$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null) || return 1
	dpkg --compare-versions "$v" ge "1:1.4"
}

if [ ${#need[@]} -eq 0 ] && libbpf_ok; then
	exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing packages (${need[*]} libbpf-dev>=1.4); run as root" >&2
	exit 1
fi

list=/etc/apt/sources.list.d/bookworm-backports.list
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
	echo "deb http://deb.debian.org/debian bookworm-backports main" >"$list"
fi

export DEBIAN_FRONTEND=noninteractive
# policy-rc.d keeps packages from starting their system services (the tests run the engines themselves).
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get update -qq
[ ${#need[@]} -eq 0 ] || apt-get install -y -qq --no-install-recommends "${need[@]}"
libbpf_ok || apt-get install -y -qq --no-install-recommends -t bookworm-backports "${backports[@]}"
libbpf_ok || { echo "install-deps: libbpf-dev >= 1.4 is not installed" >&2; exit 1; }

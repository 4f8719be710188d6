#!/usr/bin/env bash
# What `make bench` needs beyond scripts/install-deps.sh: the workloads' servers and load generator, and
# the peers it measures beside the collector (bench/peers.go): libbpf-tools (tcplife, tcpstates,
# gethostlatency, bashreadline in /usr/sbin) and bpftrace, both from bookworm's main archive.
# Idempotent. The packages' own services are not started (nginx and dnsmasq are run by the bench).
set -euo pipefail
pkgs=(nginx-light wrk dnsmasq-base openssl bash libbpf-tools bpftrace)
need=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "install-bench-deps: missing ${need[*]}; run as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages from starting their system services during installation.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends "${need[@]}"

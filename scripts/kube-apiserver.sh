#!/usr/bin/env bash
# Builds kube-apiserver v1.37.2 from the Go module proxy into a cache outside the repository (as the kernel
# matrix caches kernels) and installs etcd, so tests/kubeapi can run a real API server on loopback.
# Idempotent: a cached binary that reports the right version is kept. Prints the binary's path last.
# The first build takes about 6.5 minutes on 2 cores and 2.9 GB of memory.
set -euo pipefail

ver=1.37.2
staging=0.${ver#1.} # the staging modules (k8s.io/api, …) are released as v0.37.2
cache=${DKEBPF_KUBE_CACHE:-/var/cache/dkebpf-kube}
bin=$cache/kube-apiserver-v$ver

# etcd (Debian's etcd-server 3.4 is accepted) and openssl, from apt, only when missing.
need=()
command -v etcd >/dev/null || need+=(etcd-server)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "kube-apiserver.sh: missing packages (${need[*]}); run as root" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v$ver\$"; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d)
tmpbin=$bin.tmp.$$ # a half-written binary never has the cached name
trap 'rm -rf "$work" "$tmpbin"' EXIT
export GOTOOLCHAIN=local GOFLAGS=-mod=mod

# A throwaway module that requires k8s.io/kubernetes and replaces each staging module (./staging/... in
# kubernetes' own go.mod, absent from its module zip) with the released module of the same name.
cd "$work"
go mod init dkebpf.local/kube-apiserver >/dev/null 2>&1
kmod=$(go mod download -json "k8s.io/kubernetes@v$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$kmod" ] || { echo "kube-apiserver.sh: cannot download k8s.io/kubernetes@v$ver" >&2; exit 1; }
edits=(-require="k8s.io/kubernetes@v$ver")
while read -r mod; do
	edits+=(-replace="$mod=$mod@v$staging")
done < <(awk '/^replace \(/{inb=1; next} inb && /^\)/{inb=0} inb && $2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$kmod")
[ ${#edits[@]} -gt 10 ] || { echo "kube-apiserver.sh: no staging replaces found in $kmod" >&2; exit 1; }
go mod edit "${edits[@]}"

pkg=k8s.io/component-base/version
ldflags="-X $pkg.gitVersion=v$ver -X $pkg.gitMajor=${ver%%.*} -X $pkg.gitMinor=$(echo "$ver" | cut -d. -f2)"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
go build -trimpath -ldflags "$ldflags" -o "$tmpbin" k8s.io/kubernetes/cmd/kube-apiserver
"$tmpbin" --version | grep -q "v$ver\$" || { echo "kube-apiserver.sh: built binary does not report v$ver" >&2; exit 1; }
mv "$tmpbin" "$bin"
echo "$bin"

#!/usr/bin/env bash
# Builds thanos v0.42.5 from the Go module proxy into a cache outside the repository (as kube-apiserver.sh
# does), so tests/integration can run a real distributed engine (a receive hashring and a querier) on loopback.
# Idempotent: a cached binary that reports the right version is kept. Prints the binary's path last.
# thanos' go.mod asks for go 1.26.10, newer than the machine's Go, so this script (and only this script) sets
# GOTOOLCHAIN=go1.27.3, which the go command fetches from the module proxy.
# The first build takes about 5 minutes on 2 cores and 1.5 GB of memory (/usr/bin/time -v: 5 min 9 s and a
# 1.48 GB peak with cold module and build caches, toolchain download included; 4 min 43 s and 1.49 GB with a
# cold build cache and the modules already downloaded).
set -euo pipefail

ver=0.42.5
cache=${DKEBPF_THANOS_CACHE:-/var/cache/dkebpf-thanos}
bin=$cache/thanos-v$ver

# thanos --version names the build tags: a binary built without slicelabels (see below) is not kept.
ok() { "$1" --version 2>&1 | grep -q "version $ver " && "$1" --version 2>&1 | grep -q "tags:.*slicelabels"; }
if [ -x "$bin" ] && ok "$bin"; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d)
tmpbin=$bin.tmp.$$ # a half-written binary never has the cached name
trap 'rm -rf "$work" "$tmpbin"' EXIT
export GOTOOLCHAIN=go1.27.3 GOFLAGS=-mod=mod

# A throwaway module that requires github.com/thanos-io/thanos and copies the replace lines of thanos' own
# go.mod (replace directives apply only in the main module, and thanos builds only with them).
cd "$work"
go mod init dkebpf.local/thanos >/dev/null 2>&1
tmod=$(go mod download -json "github.com/thanos-io/thanos@v$ver" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$tmod" ] || { echo "thanos.sh: cannot download github.com/thanos-io/thanos@v$ver" >&2; exit 1; }
edits=(-require="github.com/thanos-io/thanos@v$ver")
# Each replace line is `old [oldver] => new [newver]`, in a replace ( … ) block or on its own; it becomes
# -replace=old[@oldver]=new[@newver].
while read -r r; do
	edits+=(-replace="$r")
done < <(awk '
	{ sub(/\/\/.*/, "") }
	/^replace \(/ { inb = 1; next }
	inb && /^\)/ { inb = 0; next }
	(inb || /^replace /) && /=>/ {
		sub(/^replace /, ""); split($0, p, "=>"); n = split(p[1], l, " "); m = split(p[2], r, " ")
		print l[1] (n > 1 ? "@" l[2] : "") "=" r[1] (m > 1 ? "@" r[2] : "")
	}' "$tmod")
[ ${#edits[@]} -gt 3 ] || { echo "thanos.sh: no replace lines found in $tmod" >&2; exit 1; }
go mod edit "${edits[@]}"

pkg=github.com/prometheus/common/version
ldflags="-X $pkg.Version=$ver -X $pkg.Revision=v$ver -X $pkg.Branch=HEAD -X $pkg.BuildUser=dkebpf"
ldflags+=" -X $pkg.BuildDate=$(date -u +%Y%m%d-%H:%M:%S)"
# The tags of thanos' .promu.yml. slicelabels is required: Prometheus 3 defaults to stringlabels, and thanos
# casts []labels.Label to its own label type with unsafe; without the tag every receive panics ("index out of
# range [64] with length 63" in grpc's buffer pool) on the querier's first Info call.
go build -trimpath -tags netgo,slicelabels -ldflags "$ldflags" -o "$tmpbin" github.com/thanos-io/thanos/cmd/thanos
ok "$tmpbin" || { echo "thanos.sh: built binary does not report version $ver with tags slicelabels" >&2; exit 1; }
mv "$tmpbin" "$bin"
echo "$bin"

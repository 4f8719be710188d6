#!/bin/bash
# Builds the DaemonSet's image, localhost/datakit-ebpf:latest, without pulling any base image: a Debian
# minbase root file system made by mmdebstrap (cached), plus the two static binaries and conf.d.
# Run after `make build`; prints the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${DKEBPF_IMAGE_CACHE:-/var/cache/dkebpf-images}
base=$cache/datakit-ebpf-base-bookworm.tar
image=${IMAGE:-localhost/datakit-ebpf:latest}
mkdir -p "$cache"
if [ ! -s "$base" ]; then
	mmdebstrap --quiet --variant=minbase bookworm "$base.tmp.$$.tar"
	mv "$base.tmp.$$.tar" "$base"
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dk=$work/root/usr/local/datakit
install -D -m 0755 datakit "$dk/datakit"
install -D -m 0755 externals/datakit-ebpf "$dk/externals/datakit-ebpf"
install -D -m 0644 conf.d/datakit.conf "$dk/conf.d/datakit.conf"
install -D -m 0644 conf.d/samples/ebpf.conf.sample "$dk/conf.d/samples/ebpf.conf.sample"
mkdir -p "$dk/data"
cp "$base" "$work/image.tar"
tar -rf "$work/image.tar" -C "$work/root" --owner=0 --group=0 ./usr/local/datakit
podman import --quiet \
	--change 'WORKDIR /usr/local/datakit' \
	--change 'ENTRYPOINT ["/usr/local/datakit/datakit", "run", "--dir", "/usr/local/datakit"]' \
	"$work/image.tar" "$image" >/dev/null
echo "$image"

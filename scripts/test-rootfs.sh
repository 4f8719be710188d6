#!/bin/bash
# Makes the root file system of the integration tests' containers from Debian's packages (no registry, no
# base image) and imports it into podman as localhost/dkebpf-test:latest. Cached: done once per machine.
set -euo pipefail
cache=${DKEBPF_IMAGE_CACHE:-/var/cache/dkebpf-images}
tar=$cache/dkebpf-test-bookworm.tar
image=localhost/dkebpf-test:latest
mkdir -p "$cache"
if [ ! -s "$tar" ]; then
	mmdebstrap --quiet --variant=minbase --include=bash,curl,ca-certificates,openssl,iproute2 bookworm "$tar.tmp.$$.tar"
	mv "$tar.tmp.$$.tar" "$tar"
fi
if ! podman image exists "$image"; then
	podman import --quiet "$tar" "$image" >/dev/null
fi
echo "$image"

#!/usr/bin/env bash
# Downloads (never installs) the Debian kernels of the matrix into a cache outside the repository and
# extracts each one's /boot. Prints one line per kernel: <name> <vmlinuz path>.
# bullseye's 5.10 comes through a private apt configuration, so the system's apt sources stay as they are.
set -euo pipefail

cache=${DKEBPF_KERNEL_CACHE:-/var/cache/dkebpf-kernels}
mkdir -p "$cache/debs" "$cache/boot" "$cache/apt/lists/partial"

# A private apt (lists and sources under $cache/apt) that sees bullseye, bookworm and bookworm-backports.
cat >"$cache/apt/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
SRC
papt=(-o "Dir::Etc::SourceList=$cache/apt/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
	-o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache" -o "APT::Get::List-Cleanup=0" -o "APT::Sandbox::User=root")
mkdir -p "$cache/apt/cache/archives/partial"
stamp="$cache/apt/updated"
if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440)" ]; then
	apt-get "${papt[@]}" update -qq
	touch "$stamp"
fi

# The newest package matching each pattern: 5.10 cloud (bullseye), 6.1 generic and rt (bookworm),
# 6.12 generic (bookworm-backports).
patterns=('^linux-image-5\.10\.0-[0-9]+-cloud-amd64$' '^linux-image-6\.1\.0-[0-9]+-amd64$'
	'^linux-image-6\.1\.0-[0-9]+-rt-amd64$' '^linux-image-6\.12\.[0-9]+\+deb12-amd64$')
for re in "${patterns[@]}"; do
	pkg=$(apt-cache "${papt[@]}" search --names-only "$re" | awk '{print $1}' | sort -V | tail -1)
	[ -n "$pkg" ] || { echo "fetch-kernels: no package matches $re" >&2; exit 1; }
	if [ ! -d "$cache/boot/$pkg" ]; then
		deb=$(ls "$cache/debs/${pkg}_"*.deb 2>/dev/null | head -1 || true)
		if [ -z "$deb" ]; then
			(cd "$cache/debs" && apt-get "${papt[@]}" download -qq "$pkg")
			deb=$(ls "$cache/debs/${pkg}_"*.deb | head -1)
		fi
		mkdir -p "$cache/boot/$pkg.tmp"
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$cache/boot/$pkg.tmp" ./boot
		mv "$cache/boot/$pkg.tmp" "$cache/boot/$pkg"
	fi
	echo "$pkg $(ls "$cache/boot/$pkg"/boot/vmlinuz-*)"
done

#!/usr/bin/env bash
# Vendors the chart library of the agent's local page (agent/view): fetches the pinned uPlot from npm,
# checks the tarball's sha256 and copies its minified JS, CSS and licence into agent/view/assets/.
# Re-run after changing the pin; commit what it writes.
set -euo pipefail

version=1.6.32
sha256=4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/agent/view/assets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

(cd "$tmp" && npm pack --silent "uplot@$version" >/dev/null)
tgz=$tmp/uplot-$version.tgz
echo "$sha256  $tgz" | sha256sum -c --quiet - || { echo "vendor-view-assets: uplot-$version.tgz sha256 mismatch" >&2; exit 1; }
tar -xzf "$tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
mkdir -p "$out"
cp "$tmp/package/dist/uPlot.iife.min.js" "$out/uPlot.iife.min.js"
cp "$tmp/package/dist/uPlot.min.css" "$out/uPlot.min.css"
cp "$tmp/package/LICENSE" "$out/uPlot.LICENSE"
echo "uplot $version (npm, sha256 $sha256)" >"$out/uPlot.VERSION"
echo "vendor-view-assets: uplot $version in $out"

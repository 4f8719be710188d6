#!/bin/sh
# Runs every Go fuzz target of the repository for FUZZTIME each (default 10s), one at a time: `go test -fuzz`
# takes one target per run. A crash fails the run and leaves its input in the package's testdata/fuzz/, where
# it becomes a regression case of the next `go test`.
set -eu
cd "$(dirname "$0")/.."
time=${FUZZTIME:-10s}
for pkg in $(go list ./... | grep -v /tests/); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "  FUZZ    $pkg $target ($time)"
		go test -run '^$' -fuzz "^$target\$" -fuzztime "$time" -fuzzminimizetime 10s "$pkg" >/tmp/fuzz.$$ 2>&1 || {
			cat /tmp/fuzz.$$
			rm -f /tmp/fuzz.$$
			exit 1
		}
	done
done
rm -f /tmp/fuzz.$$

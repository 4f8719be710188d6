#!/bin/sh
# Runs every Go fuzz target of the repository for FUZZTIME each (default 10s), one at a time: `go test -fuzz`
# takes one target per run. A crash fails the run and leaves its input in the package's testdata/fuzz/, where
# it becomes a regression case of the next `go test`.
#
# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline exceeded" at the end of -fuzztime
# having found nothing (go.dev/issue/75804, fixed in Go 1.27). Such a run, and only such a run (no failing
# input written), is said and run once more; a second failure of any kind fails.
set -eu
cd "$(dirname "$0")/.."
time=${FUZZTIME:-10s}
out=/tmp/fuzz.$$
trap 'rm -f $out' EXIT
fuzz() {
	go test -run '^$' -fuzz "^$2\$" -fuzztime "$time" -fuzzminimizetime 10s "$1" >$out 2>&1
}
deadline_race() {
	grep -q '^    context deadline exceeded$' $out && ! grep -q 'Failing input written' $out
}
for pkg in $(go list ./... | grep -v /tests/); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		echo "  FUZZ    $pkg $target ($time)"
		fuzz "$pkg" "$target" && continue
		if deadline_race; then
			echo "  FUZZ    $pkg $target: Go's fuzztime deadline race (go.dev/issue/75804), no input found; once more"
			fuzz "$pkg" "$target" && continue
		fi
		cat $out
		exit 1
	done
done

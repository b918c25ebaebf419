#!/usr/bin/env bash
# The project's one test command: formatting, vet, staticcheck, the race-
# enabled test suite, a short fuzzing budget per target, and the quickstart.
# Run it from anywhere; it needs only Go (and the module proxy, the first
# time, to fetch dependencies and staticcheck).
#
#   FUZZTIME=1m scripts/test.sh   # fuzz longer (default 15s per target)
set -euo pipefail
cd "$(dirname "$0")/.."

export PATH="$(go env GOPATH)/bin:$PATH"
fuzztime="${FUZZTIME:-15s}"

step() { printf '\n==> %s\n' "$*"; }

step "gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
if ! command -v staticcheck >/dev/null 2>&1; then
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
staticcheck ./...

step "quickstart example"
timeout 60 go run ./examples/quickstart >/dev/null

step "fuzz ($fuzztime per target)"
for target in $(go test -list '^Fuzz' . | grep '^Fuzz'); do
	if ! out=$(go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" . 2>&1); then
		echo "$out"; exit 1
	fi
	echo "$target: $(echo "$out" | tail -n 1)"
done

step "go test -race"
go test -race -count=1 ./...

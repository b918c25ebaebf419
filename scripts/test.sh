#!/usr/bin/env bash
# The project's one test command. For each Go module of the repository
# (the core in the root, sqlstore/, redisstore/, examples/durable/,
# examples/transactional/, apcoreotel/, apcorehttp/, examples/dashboard/,
# processtest/, built together through go.work): gofmt, go vet,
# staticcheck and go test -race; for the core also a short fuzzing budget
# per target and the quickstart example. It also checks that testdata/
# holds the same conformance fixtures as ../shared/spec/fixtures (when
# that folder exists), and that the modules can be fetched and used from
# outside the repository (scripts/consumer.sh: a local module proxy at
# v0.2.0 and a program that go-gets from it). The store tests run against
# real PostgreSQL and Redis servers that scripts/services.sh installs (from
# Debian, when missing) and starts on loopback for the run.
#
#   ./scripts/test.sh               # everything
#   FUZZTIME=1m ./scripts/test.sh   # fuzz longer (default 15s per target)
#   go test -race ./...             # the core alone: no servers needed
#
# In the root, ./... is the core alone even in workspace mode: a package
# pattern stops at every folder with a go.mod of its own. So each module's
# tests run once, in the loop at the end, from that module's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Only stdin, stdout and stderr go on to what this script starts: a file
# our caller holds open, such as the lock of
# "flock /tmp/apcore-heavy.lock ./scripts/test.sh", would otherwise be
# inherited by the go test processes and by the servers that some tests
# restart as daemons (redisstore's), which would hold the lock after this
# run has ended. (flock -o does the same from outside.)
for fd in /proc/$$/fd/*; do
	fd=${fd##*/}
	if [ "$fd" -gt 2 ] 2>/dev/null; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

export PATH="$(go env GOPATH)/bin:$PATH"
fuzztime="${FUZZTIME:-15s}"
modules=(. sqlstore redisstore examples/durable examples/transactional apcoreotel apcorehttp examples/dashboard processtest cmd/apcore)

step() { printf '\n==> %s\n' "$*"; }

step "gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

step "conformance fixtures: testdata/ against ../shared/spec/fixtures"
reference="$root/../shared/spec/fixtures"
if [ -d "$reference" ]; then
	differ=0
	shopt -s nullglob
	for f in "$reference"/*; do
		name=$(basename "$f")
		if [ ! -f "testdata/$name" ]; then
			echo "testdata/$name is missing"; differ=1
		elif ! cmp "$f" "testdata/$name"; then
			differ=1
		fi
	done
	for f in testdata/*.json; do
		if [ ! -e "$reference/$(basename "$f")" ]; then
			echo "$f is not in $reference"; differ=1
		fi
	done
	shopt -u nullglob
	if [ "$differ" -ne 0 ]; then
		echo "testdata/ and $reference differ: copy the reference over (see testdata/README.md)"; exit 1
	fi
	echo "testdata/ holds the same $(ls "$reference" | wc -l) fixture files as $reference"
else
	echo "no $reference here: nothing to compare testdata/ with"
fi

if ! command -v staticcheck >/dev/null 2>&1; then
	step "installing staticcheck"
	go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
for mod in "${modules[@]}"; do
	step "go vet, staticcheck: $mod"
	(cd "$root/$mod" && go vet ./... && staticcheck ./...)
done
# The tool that lays out the local module proxy is a module kept out of the
# workspace, so that its dependency never enters the others' build list.
step "go vet, staticcheck: scripts/modproxy"
(cd "$root/scripts/modproxy" && GOWORK=off go vet ./... && GOWORK=off staticcheck ./...)
# The benchmarks against river and asynq, and the scale benchmark, are a
# module of their own, so that no other module requires them. They are
# built and checked here; they take minutes (scripts/bench-durable.sh,
# scripts/bench-scale.sh run them), so only the scale benchmark's quick
# mode on the memory store runs, as its test.
step "build, go vet, staticcheck: benchmarks; the scale benchmark's quick test"
(cd "$root/benchmarks" && go build -o /dev/null ./... && go vet ./... && staticcheck ./... && go test -count=1 ./scale)

step "quickstart example"
timeout 60 go run ./examples/quickstart >/dev/null

step "the modules used from outside: local module proxy, go get, build, run"
bash "$root/scripts/consumer.sh"

step "fuzz ($fuzztime per target)"
fuzz_one() { go test -run '^$' -fuzz "^$1\$" -fuzztime "$fuzztime" . 2>&1; }
for target in $(go test -list '^Fuzz' . | grep '^Fuzz'); do
	if ! out=$(fuzz_one "$target"); then
		# Go 1.26's fuzz coordinator can fail a target with "context
		# deadline exceeded" just as -fuzztime ends, having found nothing
		# (go.dev/issue/75804, fixed in Go 1.27). A real finding writes a
		# failing input; a bare deadline error gets one more run.
		if grep -q "context deadline exceeded" <<<"$out" && ! grep -q "Failing input written" <<<"$out"; then
			echo "$target: the fuzz coordinator's deadline race (go.dev/issue/75804), no failing input: once more"
			out=$(fuzz_one "$target") || { echo "$out"; exit 1; }
		else
			echo "$out"; exit 1
		fi
	fi
	echo "$target: $(echo "$out" | tail -n 1)"
done

# apcorehttp's browser test drives Debian's Chromium (/usr/bin/chromium);
# it fails, not skips, when the browser is missing.
if [ ! -x /usr/bin/chromium ]; then
	step "installing chromium for apcorehttp's browser test"
	if [ "$(id -u)" != 0 ]; then
		echo "chromium is missing and we are not root: apt-get install -y chromium" >&2; exit 1
	fi
	apt-get update -qq >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

step "PostgreSQL and Redis for the store tests"
source "$root/scripts/services.sh"
# The servers stop, and the reserved ports are given back, however the run
# ends: a failing step (set -e), the end, or Ctrl-C / SIGTERM (which exit,
# so that the EXIT trap runs).
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
start_services
# redisstore's cluster and failover tests; without these servers they fail
# and say why.
start_redis_cluster || echo "services: the Redis Cluster did not start"
start_redis_sentinel || echo "services: the Redis Sentinel setup did not start"

status=0
step "soak test (the core under load and store faults)"
if out=$(go test -race -count=1 -run '^TestSoak$' -v . 2>&1); then
	echo "$out" | grep -E 'soak[ :(]|^(ok|PASS)'
else
	echo "$out"; status=1
fi
# Replica processes killed, frozen (SIGSTOP, and cut off from the store by a
# proxy that stops forwarding) and drained over the real servers, and a
# minute of chaos per server; -v so that recovery times, runs per task and
# the freeze's summary show in the log.
step "process tests (real child processes: SIGKILL, SIGSTOP, a silent store, SIGTERM, chaos)"
if out=$(cd "$root/processtest" && go test -race -count=1 -timeout 20m -v ./... 2>&1); then
	echo "$out" | grep -E 'recovered|chaos:|freeze:|^(ok|PASS|--- )'
else
	echo "$out"; status=1
fi
for mod in "${modules[@]}"; do
	[ "$mod" = processtest ] && continue # just run above
	step "go test -race: $mod"
	(cd "$root/$mod" && go test -race -count=1 -skip '^TestSoak$' ./...) || status=1
done
exit $status

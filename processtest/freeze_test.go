package processtest

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// freezeFor is how long the proxy holds the frozen replica's bytes: three
// lease TTLs, past the lapse of its lease and the recovery of its tasks.
const freezeFor = 3 * ttl

// Two replica processes share PostgreSQL (then Redis); one of them reaches
// the server through a proxy that stops forwarding bytes, both ways,
// without closing a connection, for three lease TTLs while that replica
// runs tasks, submits, renews its lease and answers calls, and then lets
// them flow again. Unlike SIGSTOP, the frozen replica's own clock and
// modules go on: only its store is silent. Afterwards no non-resumable
// task ran on both replicas, no resumable task ran on both at the same
// time (each run's start and end are in the run log), every task is
// terminal, each resumable one completed, nothing is left active, and each
// call made to the frozen replica (Submit, Status, List, TaskCount, each
// with a 500 ms deadline) returned by its deadline.
func TestFreezeBehindProxy(t *testing.T) {
	all := stores(t)
	for _, name := range []string{"PostgreSQL", "Redis"} {
		t.Run(name, func(t *testing.T) { freeze(t, all[name]) })
	}
}

// proxied returns spec with its server's address replaced by a pausable
// proxy's, and the proxy.
func proxied(t *testing.T, spec string) (string, *pauseProxy) {
	t.Helper()
	kind, rest, _ := strings.Cut(spec, ":")
	dsn, suffix, _ := strings.Cut(rest, "#")
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	p := newPauseProxy(t, u.Host)
	u.Host = p.Addr()
	return kind + ":" + u.String() + "#" + suffix, p
}

// lineLog collects the lines a child prints after "ready".
type lineLog struct {
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func collect(c *child) *lineLog {
	l := &lineLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for line := range c.lines {
			l.mu.Lock()
			l.lines = append(l.lines, line)
			l.mu.Unlock()
		}
	}()
	return l
}

// all returns the lines, once the child has ended.
func (l *lineLog) all() []string {
	<-l.done
	return l.lines
}

func freeze(t *testing.T, spec string) {
	runlog := filepath.Join(t.TempDir(), "runs")
	frozenSpec, proxy := proxied(t, spec)
	const probeDeadline = 500 * time.Millisecond
	frozen := start(t, "-store", frozenSpec, "-ttl", ttl.String(), "-c", "6", "-runlog", runlog,
		"-submit", "12", "-resumable-every", "2", "-ms", "4000", "-trickle", "50ms",
		"-probe", "100ms", "-probe-deadline", probeDeadline.String(), "-drain", "5s")
	_, lines := frozen.until("ready", 30*time.Second)
	ids, resumable := submitted(lines)
	require.Len(t, ids, 12)
	frozenLines := collect(frozen)
	live := start(t, "-store", spec, "-ttl", ttl.String(), "-c", "8", "-runlog", runlog, "-drain", "5s")
	live.until("ready", 30*time.Second)
	liveLines := collect(live)
	frozenPid, livePid := frozen.cmd.Process.Pid, live.cmd.Process.Pid

	// Freeze it while it runs tasks of its own, resumable ones among them,
	// and keeps submitting, renewing and answering.
	submittedHere := map[string]bool{}
	for _, id := range ids {
		submittedHere[id] = true
	}
	onFrozen := func() (res, other int) {
		for _, r := range readRuns(t, runlog) {
			if r.what == "run" && r.pid == frozenPid && submittedHere[r.id] {
				if resumable[r.id] {
					res++
				} else {
					other++
				}
			}
		}
		return res, other
	}
	require.Eventually(t, func() bool { res, other := onFrozen(); return res >= 2 && res+other >= 4 }, 10*time.Second, 10*time.Millisecond,
		"the replica to freeze runs its tasks")
	proxy.Pause()
	pausedAt := time.Now()
	res, other := onFrozen()
	t.Logf("freezing replica %d while it runs %d resumable and %d other tasks of the 12 it submitted", frozenPid, res, other)
	time.Sleep(freezeFor) // the fault itself: the store is silent this long
	proxy.Resume()
	resumedAt := time.Now()
	t.Logf("the proxy held the bytes of replica %d for %v (replica %d reaches the store directly)", frozenPid, resumedAt.Sub(pausedAt), livePid)

	store := open(t, spec)
	watcher := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(0))
	outcome := waitAll(t, watcher, ids, 60*time.Second)
	for _, id := range ids {
		if resumable[id] {
			assert.Equal(t, apcore.StatusCompleted, outcome[id].Status, "resumable %s completes: %+v", id, outcome[id])
		}
	}

	// Stop both (Shutdown: the tasks they still run end cancelled), then
	// look at everything the frozen one submitted too.
	frozen.signal(syscall.SIGINT)
	live.signal(syscall.SIGINT)
	require.NoError(t, frozen.wait())
	require.NoError(t, live.wait())
	after := frozenLines.all()
	liveLines.all()
	more, _ := submitted(after)
	all := append(ids, more...)
	for _, id := range all {
		info, err := store.Get(context.Background(), id)
		if !assert.NoError(t, err, "%s was submitted and is lost", id) {
			continue
		}
		assert.True(t, info.Status.IsTerminal(), "%s ends terminal: %s", id, info.Status)
	}
	checkCounts(t, store)

	checkRuns(t, readTimedRuns(t, runlog), resumable, pausedAt)
	checkProbes(t, after, pausedAt, resumedAt)
}

// timedRun is one attempt of a task in the run log: its start, and its end
// (zero when the log has none).
type timedRun struct {
	id         string
	pid        int
	seq        int64
	start, end time.Time
	wrote      bool
}

// readTimedRuns pairs each "run" line of the run log with the "done" or
// "stopped" line of the same process and sequence number.
func readTimedRuns(t *testing.T, path string) []*timedRun {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	type key struct {
		pid int
		seq int64
	}
	byKey := map[key]*timedRun{}
	var out []*timedRun
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var what, id string
		var pid int
		var seq, ns int64
		if _, err := fmt.Sscanf(l, "%s %s %d %d %d", &what, &id, &pid, &seq, &ns); err != nil {
			t.Fatalf("run log line %q: %v", l, err)
		}
		k := key{pid, seq}
		r := byKey[k]
		if r == nil {
			r = &timedRun{id: id, pid: pid, seq: seq}
			byKey[k] = r
			out = append(out, r)
		}
		switch what {
		case "run":
			r.start = time.Unix(0, ns)
		case "done", "stopped":
			r.end = time.Unix(0, ns)
		case "wrote":
			r.wrote = true
		}
	}
	return out
}

// checkRuns: no non-resumable task ran on two replicas, no two attempts of
// a resumable task overlap in time, and the store took the outcome of one
// attempt only of each task.
func checkRuns(t *testing.T, runs []*timedRun, resumable map[string]bool, pausedAt time.Time) {
	t.Helper()
	byTask := map[string][]*timedRun{}
	for _, r := range runs {
		byTask[r.id] = append(byTask[r.id], r)
	}
	ids := make([]string, 0, len(byTask))
	for id := range byTask {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	twice, overlaps := 0, 0
	for _, id := range ids {
		attempts := byTask[id]
		pids, wrote := map[int]bool{}, 0
		for _, r := range attempts {
			if !r.start.IsZero() {
				pids[r.pid] = true
			}
			if r.wrote {
				wrote++
			}
		}
		assert.LessOrEqual(t, wrote, 1, "%s: the store took the outcome of %d attempts", id, wrote)
		if len(attempts) > 1 {
			twice++
			var desc []string
			for _, r := range attempts {
				desc = append(desc, fmt.Sprintf("pid %d %s-%s", r.pid, since(pausedAt, r.start), since(pausedAt, r.end)))
			}
			t.Logf("freeze: %s (resumable %v) ran %d times, from the freeze's start: %s", id, resumable[id], len(attempts), strings.Join(desc, ", "))
		}
		if !resumable[id] {
			assert.LessOrEqual(t, len(pids), 1, "non-resumable %s ran on %d replicas", id, len(pids))
			continue
		}
		for i, a := range attempts {
			for _, b := range attempts[i+1:] {
				if a.start.IsZero() || b.start.IsZero() {
					continue
				}
				if a.start.After(b.start) {
					a, b = b, a
				}
				if a.end.IsZero() || a.end.After(b.start) {
					overlaps++
					end := "never ended"
					if !a.end.IsZero() {
						end = fmt.Sprintf("ended %v after the other began", a.end.Sub(b.start).Round(time.Millisecond))
					}
					t.Errorf("resumable %s ran on two replicas at the same time: the run of pid %d (seq %d) %s on pid %d (seq %d)",
						id, a.pid, a.seq, end, b.pid, b.seq)
				}
			}
		}
	}
	t.Logf("freeze: %d runs of %d tasks in the log, %d tasks ran more than once, %d overlapping runs", len(runs), len(byTask), twice, overlaps)
}

// probeSlack is how much past its deadline a probe may return: scheduling,
// not waiting for the store (the slowest of a run is about 1 ms past).
const probeSlack = 100 * time.Millisecond

// checkProbes: each call made to the frozen replica returned by its
// deadline (within probeSlack of it: the time a busy machine takes to
// schedule the caller's goroutine once its context has ended), and calls
// were made all through the freeze.
func checkProbes(t *testing.T, lines []string, pausedAt, resumedAt time.Time) {
	t.Helper()
	during, late := 0, 0
	var worst time.Duration
	for _, l := range lines {
		var call, outcome string
		var startNs, elapsedNs, deadlineNs int64
		if _, err := fmt.Sscanf(l, "probe %s %d %d %d %s", &call, &startNs, &elapsedNs, &deadlineNs, &outcome); err != nil {
			continue
		}
		started, elapsed, deadline := time.Unix(0, startNs), time.Duration(elapsedNs), time.Duration(deadlineNs)
		if started.After(pausedAt) && started.Before(resumedAt) {
			during++
		}
		worst = max(worst, elapsed)
		if elapsed > deadline+probeSlack {
			late++
			t.Errorf("%s on the frozen replica returned after %v, deadline %v (started %v after the freeze began): %s",
				call, elapsed.Round(time.Millisecond), deadline, started.Sub(pausedAt).Round(time.Millisecond), strings.TrimPrefix(l, "probe "))
		}
	}
	t.Logf("freeze: %d calls to the frozen replica began during the freeze, %d returned late, the slowest took %v", during, late, worst.Round(time.Millisecond))
	assert.GreaterOrEqual(t, during, int(freezeFor/(2*time.Second)), "calls went on during the freeze")
}

// since renders when, relative to the freeze's start; "?" when unknown.
func since(pausedAt, when time.Time) string {
	if when.IsZero() {
		return "?"
	}
	return fmt.Sprintf("%+.2fs", when.Sub(pausedAt).Seconds())
}

package processtest

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var scheduleFor = flag.Duration("schedule-for", 30*time.Second, "how long TestScheduleAcrossProcesses lets its replicas tick")

// Three replica processes over PostgreSQL (then Redis) each add the same
// "@every 1s" schedule of resumable tasks and tick for 30 s; at a third of
// that, one of them is killed with SIGKILL while a tick's task runs on it,
// and it is started again 5 s later. Then all three are drained. Every
// tick makes exactly one task (each unique key once in the store), no tick
// is missed while a replica lived (here always at least two), and every
// task completed: the killed replica's cut-short task on another process.
// The counts are logged.
func TestScheduleAcrossProcesses(t *testing.T) {
	all := stores(t)
	for _, name := range []string{"PostgreSQL", "Redis"} {
		t.Run(name, func(t *testing.T) { scheduleAcross(t, name, all[name]) })
	}
}

// replicaLife is when one replica process could tick: from its "ready"
// line (after AddSchedule) to its kill or its SIGTERM.
type replicaLife struct {
	pid        int
	from, till time.Time
}

func scheduleAcross(t *testing.T, name, spec string) {
	const (
		schedName = "pt.tick"
		taskMs    = 2500 // about 2.5 tasks run at any time: the kill finds one
	)
	runlog := filepath.Join(t.TempDir(), "runs")
	args := []string{"-store", spec, "-ttl", ttl.String(), "-c", "3", "-runlog", runlog,
		"-schedule", "@every 1s", "-schedule-name", schedName, "-ms", strconv.Itoa(taskMs), "-drain", "10s"}
	procs := make([]*child, 3)
	lives := make([]*replicaLife, 0, 4)
	startOne := func(i int) {
		procs[i] = start(t, args...)
		line, _ := procs[i].until("ready", 30*time.Second)
		pid, err := strconv.Atoi(strings.TrimPrefix(line, "ready "))
		require.NoError(t, err, line)
		lives = append(lives, &replicaLife{pid: pid, from: time.Now()})
		go func(c *child) { // keep its stdout flowing
			for range c.lines {
			}
		}(procs[i])
	}
	lifeOf := func(pid int) *replicaLife {
		for _, l := range lives {
			if l.pid == pid {
				return l
			}
		}
		return nil
	}
	began := time.Now()
	for i := range procs {
		startOne(i)
	}

	// At a third of the run, kill a replica that has a tick's task running
	// and that started it less than a second ago (it has 1.5 s more to go).
	time.Sleep(time.Until(began.Add(*scheduleFor / 3)))
	killed := -1
	for deadline := time.Now().Add(5 * time.Second); killed < 0; time.Sleep(20 * time.Millisecond) {
		require.True(t, time.Now().Before(deadline), "%s: no replica started a tick's task within 5 s to be killed during it", name)
		open := openRuns(t, runlog)
		for i, c := range procs {
			if slices.ContainsFunc(open, func(r *timedRun) bool {
				return r.pid == c.cmd.Process.Pid && time.Since(r.start) < time.Second
			}) {
				lifeOf(c.cmd.Process.Pid).till = time.Now()
				c.signal(syscall.SIGKILL)
				_ = c.wait()
				killed = i
				break
			}
		}
	}
	killedPid := procs[killed].cmd.Process.Pid
	var cutShort []string // the tasks the killed replica was running
	for _, r := range openRuns(t, runlog) {
		if r.pid == killedPid {
			cutShort = append(cutShort, r.id)
		}
	}
	t.Logf("%s: killed replica %d (pid %d) at %v, running %v", name, killed, killedPid, time.Since(began).Round(time.Millisecond), cutShort)
	time.Sleep(5 * time.Second)
	startOne(killed)
	t.Logf("%s: replica %d back (pid %d) at %v", name, killed, procs[killed].cmd.Process.Pid, time.Since(began).Round(time.Millisecond))

	time.Sleep(time.Until(began.Add(*scheduleFor)))
	for _, c := range procs { // stop them all: each drains its running tasks
		lifeOf(c.cmd.Process.Pid).till = time.Now()
		c.signal(syscall.SIGTERM)
	}
	for _, c := range procs {
		_ = c.wait()
	}

	// What the drains handed back pending, a manager here runs.
	store := open(t, spec)
	all, err := store.List(context.Background(), "")
	require.NoError(t, err)
	ids := make([]string, 0, len(all))
	for _, info := range all {
		ids = append(ids, info.TaskID)
	}
	finisher := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(10))
	outcome := waitAll(t, finisher, ids, 30*time.Second)

	// Exactly one task per tick: every key once.
	byKey := map[string][]string{}
	ticks := map[int64]bool{}
	prefix := "schedule:" + schedName + ":"
	var keyless []string // tasks without a tick's key
	for _, id := range ids {
		key := outcome[id].UniqueKey
		byKey[key] = append(byKey[key], id)
		sec, err := strconv.ParseInt(strings.TrimPrefix(key, prefix), 10, 64)
		if !strings.HasPrefix(key, prefix) || err != nil {
			keyless = append(keyless, fmt.Sprintf("%s (%q)", id, key))
			continue
		}
		ticks[sec] = true
	}
	assert.Empty(t, keyless, "%s: %d of %d tasks have no tick's key (the store does not keep UniqueKey?)", name, len(keyless), len(ids))
	var twice []string // keys held by more than one task
	for key, of := range byKey {
		if len(of) > 1 {
			twice = append(twice, fmt.Sprintf("%q: %d tasks", key, len(of)))
		}
	}
	slices.Sort(twice)
	assert.Empty(t, twice, "%s: ticks that made more than one task (the store does not enforce unique keys?)", name)
	require.NotEmpty(t, ticks, "%s: no tick made a task", name)

	// No tick missed while a replica lived: each second from the first tick
	// to the last has its key, unless no replica could tick then (alive
	// from before the tick until after its Submit).
	secs := make([]int64, 0, len(ticks))
	for s := range ticks {
		secs = append(secs, s)
	}
	slices.Sort(secs)
	first, last := secs[0], secs[len(secs)-1]
	var missed []int64
	unattended := 0
	for s := first; s <= last; s++ {
		if ticks[s] {
			continue
		}
		at := time.Unix(s, 0)
		if !slices.ContainsFunc(lives, func(l *replicaLife) bool {
			return l.from.Before(at.Add(-100*time.Millisecond)) && l.till.After(at.Add(500*time.Millisecond))
		}) {
			unattended++
			continue
		}
		missed = append(missed, s)
	}
	assert.Empty(t, missed, "%s: ticks missed while a replica lived", name)
	// And the ticks run from the first replica's start to the SIGTERMs.
	firstReady, lastTerm := lives[0].from, lives[0].till
	for _, l := range lives {
		if l.till.After(lastTerm) {
			lastTerm = l.till
		}
	}
	assert.LessOrEqual(t, first, firstReady.Add(1100*time.Millisecond).Unix(), "%s: the first tick after the first replica started", name)
	assert.GreaterOrEqual(t, last, lastTerm.Add(-1500*time.Millisecond).Unix(), "%s: ticks until the replicas stopped", name)

	// Each task ran to completion; the killed replica's cut-short ones on
	// another process.
	byPid := map[int]int{}
	for _, id := range ids {
		info := outcome[id]
		if !assert.Equal(t, apcore.StatusCompleted, info.Status, "%s: task %s (%s) is %s %s %s", name, id, info.UniqueKey, info.Status, info.ErrorCode, info.Error) {
			continue
		}
		byPid[pidOf(info.Result)]++
	}
	require.NotEmpty(t, cutShort, "the killed replica was running a task")
	recovered := 0
	for _, id := range cutShort {
		info, ok := outcome[id]
		if assert.True(t, ok, "%s: the killed replica's task %s is in the store", name, id) &&
			assert.Equal(t, apcore.StatusCompleted, info.Status, id) &&
			assert.NotEqual(t, killedPid, pidOf(info.Result), "%s: %s completed elsewhere", name, id) {
			recovered++
		}
	}
	checkCounts(t, store)

	// How long from each tick to its task's first start (run log).
	started := map[string]time.Time{}
	for _, r := range readTimedRuns(t, runlog) {
		if s, ok := started[r.id]; !r.start.IsZero() && (!ok || r.start.Before(s)) {
			started[r.id] = r.start
		}
	}
	var lags []time.Duration
	for _, id := range ids {
		sec, _ := strconv.ParseInt(strings.TrimPrefix(outcome[id].UniqueKey, prefix), 10, 64)
		if s, ok := started[id]; ok {
			lags = append(lags, s.Sub(time.Unix(sec, 0)))
		}
	}
	slices.Sort(lags)
	lag := "none logged"
	if len(lags) > 0 {
		lag = fmt.Sprintf("median %v, max %v over %d", lags[len(lags)/2].Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond), len(lags))
	}
	pids := make([]string, 0, len(byPid))
	for pid, n := range byPid {
		who := "replica"
		switch {
		case pid == os.Getpid():
			who = "the test's manager (handed back by a drain)"
		case pid == killedPid:
			who = "the killed replica"
		}
		pids = append(pids, fmt.Sprintf("pid %d (%s): %d", pid, who, n))
	}
	slices.Sort(pids)
	t.Logf("schedule: %s: 3 replicas, one SIGKILLed and back after 5 s, @every 1s for %v: %d ticks (%d..%d), %d tasks, %d keys made twice, %d ticks missed while a replica lived, %d with none alive; all completed (by %s); %d of %d tasks the killed replica was running recovered and completed elsewhere; tick to start: %s",
		name, *scheduleFor, len(secs), first, last, len(ids), len(twice), len(missed), unattended,
		strings.Join(pids, ", "), recovered, len(cutShort), lag)
}

// openRuns returns the runs of the log that have not returned (no "done"
// or "stopped" line of the same process and run number yet).
func openRuns(t *testing.T, path string) []*timedRun {
	t.Helper()
	var out []*timedRun
	for _, r := range readTimedRuns(t, path) {
		if !r.start.IsZero() && r.end.IsZero() {
			out = append(out, r)
		}
	}
	return out
}

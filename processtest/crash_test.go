package processtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ttl = time.Second

// A replica killed with SIGKILL while its tasks run and while it submits
// more: a live manager recovers within about two TTLs; the non-resumable
// tasks end TASK_ABANDONED, the resumable ones complete on the survivor;
// the counts agree with List, nothing stays active, and the survivor runs
// new tasks as usual.
func TestSIGKILLMidRun(t *testing.T) {
	for name, spec := range stores(t) {
		t.Run(name, func(t *testing.T) {
			runlog := filepath.Join(t.TempDir(), "runs")
			c := start(t, "-store", spec, "-ttl", ttl.String(), "-c", "3", "-runlog", runlog,
				"-submit", "10", "-resumable-every", "2", "-ms", "30000", "-trickle", "20ms")
			_, lines := c.until("ready", 30*time.Second)
			ids, resumable := submitted(lines)
			require.Len(t, ids, 10)
			require.Eventually(t, func() bool { return len(readRuns(t, runlog)) >= 3 }, 10*time.Second, 10*time.Millisecond,
				"three tasks start")
			time.Sleep(100 * time.Millisecond) // some trickled submits land too
			c.signal(syscall.SIGKILL)
			killed := time.Now()
			require.Error(t, c.wait(), "the child was killed")
			for line := range c.lines {
				more, _ := submitted([]string{line})
				ids = append(ids, more...)
			}

			store := open(t, spec)
			survivor := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(10))
			firstAbandoned := time.Duration(0)
			require.Eventually(t, func() bool {
				for _, id := range ids {
					info, err := survivor.Status(context.Background(), id)
					if err != nil {
						return false
					}
					if !resumable[id] && !info.Status.IsTerminal() {
						return false
					}
				}
				firstAbandoned = time.Since(killed)
				return true
			}, 10*ttl, 20*time.Millisecond, "the dead replica's non-resumable tasks end")
			t.Logf("%s: recovered %v after SIGKILL (TTL %v)", name, firstAbandoned, ttl)
			assert.Less(t, firstAbandoned, 3*ttl, "recovered within about two TTLs")
			for _, id := range ids {
				info, err := survivor.Status(context.Background(), id)
				require.NoError(t, err)
				if resumable[id] {
					assert.NotEqual(t, apcore.StatusFailed, info.Status,
						"a resumable task goes on elsewhere, not abandoned: %s", id)
				} else {
					assert.Equal(t, apcore.StatusFailed, info.Status, id)
					assert.Equal(t, apcore.CodeTaskAbandoned, info.ErrorCode, id)
				}
			}
			var res []string
			for _, id := range ids {
				if resumable[id] {
					res = append(res, id)
				}
			}
			for id, info := range waitAll(t, survivor, res, 30*time.Second) {
				assert.Equal(t, apcore.StatusCompleted, info.Status, id)
				assert.Equal(t, os.Getpid(), pidOf(info.Result), "%s ran to completion on the survivor", id)
			}
			checkCounts(t, store)
			// The survivor runs new work as usual.
			id, err := survivor.Submit(context.Background(), "pt.work", map[string]any{"ms": 1})
			require.NoError(t, err)
			info := waitAll(t, survivor, []string{id}, 10*time.Second)[id]
			assert.Equal(t, apcore.StatusCompleted, info.Status)
		})
	}
}

// checkCounts checks that nothing is active and that Count agrees with
// List for every state.
func checkCounts(t *testing.T, store apcore.SharedStore) {
	t.Helper()
	ctx := context.Background()
	all, err := store.List(ctx, "")
	require.NoError(t, err)
	byStatus := map[apcore.TaskStatus]int{}
	for _, info := range all {
		byStatus[info.Status]++
	}
	assert.Zero(t, byStatus[apcore.StatusPending]+byStatus[apcore.StatusRunning], "no record is left active: %v", byStatus)
	if counter, ok := store.(apcore.Counter); ok {
		for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled} {
			n, err := counter.Count(ctx, st)
			require.NoError(t, err)
			assert.Equal(t, byStatus[st], n, "Count(%s) agrees with List", st)
		}
	}
}

// A replica frozen with SIGSTOP past its lease, then thawed with SIGCONT:
// its tasks were recovered meanwhile, and none of its late writes lands.
func TestSIGSTOPFencing(t *testing.T) {
	for name, spec := range stores(t) {
		t.Run(name, func(t *testing.T) {
			runlog := filepath.Join(t.TempDir(), "runs")
			c := start(t, "-store", spec, "-ttl", ttl.String(), "-c", "2", "-runlog", runlog,
				"-submit", "2", "-resumable-every", "2", "-ms", "1500")
			_, lines := c.until("ready", 30*time.Second)
			ids, resumable := submitted(lines)
			require.Len(t, ids, 2)
			require.Eventually(t, func() bool { return len(readRuns(t, runlog)) >= 2 }, 10*time.Second, 10*time.Millisecond)
			c.signal(syscall.SIGSTOP)

			store := open(t, spec)
			live := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(4))
			outcome := waitAll(t, live, ids, 30*time.Second)
			for _, id := range ids {
				if resumable[id] {
					assert.Equal(t, apcore.StatusCompleted, outcome[id].Status)
					assert.Equal(t, os.Getpid(), pidOf(outcome[id].Result), "the live replica ran it again")
				} else {
					assert.Equal(t, apcore.StatusFailed, outcome[id].Status)
					assert.Equal(t, apcore.CodeTaskAbandoned, outcome[id].ErrorCode)
				}
			}

			// Thaw it: its modules have long passed their 1.5 s and return
			// at once, and it tries to write their outcomes.
			c.signal(syscall.SIGCONT)
			require.Eventually(t, func() bool {
				ended := 0
				for _, r := range readRuns(t, runlog) {
					if (r.what == "done" || r.what == "stopped") && r.pid == c.cmd.Process.Pid {
						ended++
					}
				}
				return ended == 2
			}, 10*time.Second, 10*time.Millisecond, "the thawed replica's modules return")
			time.Sleep(2 * ttl) // time for any late write to land, were it accepted
			for _, id := range ids {
				info, err := store.Get(context.Background(), id)
				require.NoError(t, err)
				assert.Equal(t, outcome[id].Status, info.Status, "%s: a late write of the thawed replica landed", id)
				assert.Equal(t, pidOf(outcome[id].Result), pidOf(info.Result), "%s: the result is the live replica's", id)
			}
		})
	}
}

// Two processes and this one race submits against WithMaxTasks(10) over
// one store, round after round: the store never holds more than 10 active
// records.
func TestAdmissionAcrossProcesses(t *testing.T) {
	for name := range stores(t) {
		t.Run(name, func(t *testing.T) {
			for round := range 5 {
				spec := stores(t)[name] // a fresh store each round
				store := open(t, spec)
				here := manager(t, store, apcore.WithMaxTasks(10), apcore.WithMaxConcurrent(0))
				a := start(t, "-store", spec, "-max", "10", "-c", "0", "-race", "12")
				b := start(t, "-store", spec, "-max", "10", "-c", "0", "-race", "12")
				accepted := 0
				for range 12 {
					if _, err := here.Submit(context.Background(), "pt.work", map[string]any{"ms": 1}); err == nil {
						accepted++
					} else {
						require.ErrorIs(t, err, apcore.ErrTaskLimitExceeded)
					}
				}
				for _, c := range []*child{a, b} {
					line, _ := c.until("accepted", 30*time.Second)
					var n int
					_, err := fmt.Sscanf(line, "accepted %d", &n)
					require.NoError(t, err)
					accepted += n
				}
				active := 0
				for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning} {
					l, err := store.List(context.Background(), st)
					require.NoError(t, err)
					active += len(l)
				}
				assert.Equal(t, 10, active, "round %d: active records", round)
				assert.Equal(t, 10, accepted, "round %d: accepted submits across 3 processes", round)
			}
		})
	}
}

// A replica drained with SIGTERM (a rolling deploy) hands its pending and
// cut-short resumable tasks to another, which completes them all.
func TestDrainHandOff(t *testing.T) {
	for name, spec := range stores(t) {
		t.Run(name, func(t *testing.T) {
			runlog := filepath.Join(t.TempDir(), "runs")
			c := start(t, "-store", spec, "-ttl", ttl.String(), "-c", "1", "-runlog", runlog,
				"-submit", "6", "-resumable-every", "1", "-ms", "3000", "-drain", "300ms")
			_, lines := c.until("ready", 30*time.Second)
			ids, _ := submitted(lines)
			require.Len(t, ids, 6)
			require.Eventually(t, func() bool { return len(readRuns(t, runlog)) >= 1 }, 10*time.Second, 10*time.Millisecond)
			c.signal(syscall.SIGTERM)
			stopped, _ := c.until("stopped", 30*time.Second)
			assert.Contains(t, stopped, "deadline exceeded", "the running task was cut short")
			require.NoError(t, c.wait())

			store := open(t, spec)
			other := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(6))
			for id, info := range waitAll(t, other, ids, 30*time.Second) {
				assert.Equal(t, apcore.StatusCompleted, info.Status, "%s: none is cancelled", id)
			}
		})
	}
}

// runsPerTask counts the module runs of each task in the run log.
func runsPerTask(runs []run) map[string]int {
	out := map[string]int{}
	for _, r := range runs {
		if r.what == "run" {
			out[r.id]++
		}
	}
	return out
}

// histogram renders how many tasks ran how many times.
func histogram(perTask map[string]int, ids []string) string {
	h := map[int]int{}
	for _, id := range ids {
		h[perTask[id]]++
	}
	keys := make([]int, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf(" %d run(s): %d;", k, h[k])
	}
	return s
}

// Shutdown with a context that has already ended (the common
// `<-ctx.Done(); mgr.Shutdown(ctx)`) still records every cancel, on every
// durable store: the context bounds only the wait for modules.
func TestShutdownWithEndedContextRecordsEveryCancel(t *testing.T) {
	for name, spec := range stores(t) {
		t.Run(name, func(t *testing.T) {
			store := open(t, spec)
			// Nothing starts, so no task can end before the Shutdown.
			m := manager(t, store, apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(1000))
			var ids []string
			for range 300 {
				id, err := m.Submit(context.Background(), "pt.work", map[string]any{"ms": 60_000.0}) // capped at 200 ms here; float64, as the module reads it
				require.NoError(t, err)
				ids = append(ids, id)
			}
			ended, cancel := context.WithCancel(context.Background())
			cancel()
			if err := m.Shutdown(ended); err != nil {
				require.ErrorIs(t, err, context.Canceled)
			}
			for _, id := range ids {
				info, err := store.Get(context.Background(), id)
				require.NoError(t, err)
				require.Equal(t, apcore.StatusCancelled, info.Status, "task %s", id)
			}
		})
	}
}

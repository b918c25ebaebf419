package processtest

import (
	"context"
	"flag"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	chaosFor   = flag.Duration("chaos", time.Minute, "how long TestChaos kills and freezes replicas")
	chaosTasks = flag.Int("chaos-tasks", 10_000, "resumable tasks TestChaos submits")
)

// replicaSet is the chaos test's three replica processes.
type replicaSet struct {
	t      *testing.T
	args   []string
	mu     sync.Mutex
	procs  []*child
	nonRes map[string]bool // ids of the non-resumable tasks the replicas submitted
}

func (s *replicaSet) start(i int) {
	c := start(s.t, s.args...)
	c.until("ready", 30*time.Second)
	s.mu.Lock()
	s.procs[i] = c
	s.mu.Unlock()
	go func() { // collect what it submits
		for line := range c.lines {
			if ids, res := submitted([]string{line}); len(ids) == 1 && !res[ids[0]] {
				s.mu.Lock()
				s.nonRes[ids[0]] = true
				s.mu.Unlock()
			}
		}
	}()
}

// Three replica processes share PostgreSQL (then Redis) while 10,000
// resumable tasks and a stream of non-resumable ones flow; for a minute a
// replica is killed with SIGKILL and restarted, or frozen past its lease
// with SIGSTOP and thawed, every few seconds. At the end every task is
// terminal, each resumable task completed, no record is active, and no
// fenced write was accepted: of the attempts of a task, one only had its
// outcome taken by the store. The runs per task are reported.
func TestChaos(t *testing.T) {
	all := stores(t)
	for _, name := range []string{"PostgreSQL", "Redis"} {
		t.Run(name, func(t *testing.T) { chaos(t, all[name]) })
	}
}

func chaos(t *testing.T, spec string) {
	runlog := filepath.Join(t.TempDir(), "runs")
	set := &replicaSet{t: t, procs: make([]*child, 3), nonRes: map[string]bool{},
		args: []string{"-store", spec, "-ttl", ttl.String(), "-c", "8", "-runlog", runlog, "-trickle", "50ms", "-drain", "10s"}}
	for i := range set.procs {
		set.start(i)
	}
	store := open(t, spec)
	submitter := manager(t, store, apcore.WithLeaseTTL(ttl), apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(1_000_000))

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	ctx := context.Background()
	ids := make([]string, 0, *chaosTasks)
	submitDone := make(chan struct{})
	go func() { // spread the submits over most of the chaos
		defer close(submitDone)
		pace := time.Duration(float64(*chaosFor) * 0.8 / float64(*chaosTasks))
		next := time.Now()
		for i := range *chaosTasks {
			id, err := submitter.Submit(ctx, "pt.work", map[string]any{"ms": i % 50}, apcore.WithResumable(),
				apcore.WithRetry(apcore.RetryConfig{MaxRetries: 1, RetryDelay: 10 * time.Millisecond}))
			if !assert.NoError(t, err) {
				return
			}
			ids = append(ids, id)
			next = next.Add(pace)
			time.Sleep(time.Until(next))
		}
	}()

	kills, freezes := 0, 0
	for end := time.Now().Add(*chaosFor); time.Now().Before(end); {
		time.Sleep(time.Duration(2000+rng.IntN(2000)) * time.Millisecond)
		i := rng.IntN(len(set.procs))
		set.mu.Lock()
		c := set.procs[i]
		set.mu.Unlock()
		if rng.IntN(3) < 2 {
			c.signal(syscall.SIGKILL)
			_ = c.wait()
			set.start(i)
			kills++
		} else {
			c.signal(syscall.SIGSTOP)
			time.Sleep(ttl * 5 / 2) // past its lease
			c.signal(syscall.SIGCONT)
			freezes++
		}
	}
	<-submitDone
	t.Logf("chaos: %d kills and %d freezes of 3 replicas over %v; %d resumable tasks submitted", kills, freezes, *chaosFor, len(ids))

	outcome := waitAll(t, submitter, ids, 3*time.Minute)
	set.mu.Lock()
	nonRes := make([]string, 0, len(set.nonRes))
	for id := range set.nonRes {
		nonRes = append(nonRes, id)
	}
	procs := append([]*child(nil), set.procs...)
	set.mu.Unlock()
	for _, c := range procs { // a graceful stop: each cancels its own leftovers
		c.signal(syscall.SIGINT)
	}
	for _, c := range procs {
		_ = c.wait()
	}
	for id, info := range waitAll(t, submitter, nonRes, time.Minute) {
		assert.True(t, info.Status.IsTerminal(), "non-resumable task %s is %s", id, info.Status)
	}

	runs := readRuns(t, runlog)
	accepted := map[string][]run{} // the writes of outcomes the store took, per task
	for _, r := range runs {
		if r.what == "wrote" {
			accepted[r.id] = append(accepted[r.id], r)
		}
	}
	fenced, matched := 0, 0
	for _, id := range ids {
		info := outcome[id]
		if !assert.Equal(t, apcore.StatusCompleted, info.Status, "resumable task %s (%s %s)", id, info.ErrorCode, info.Error) {
			continue
		}
		if w := accepted[id]; len(w) > 1 {
			fenced++
			t.Errorf("task %s: %d attempts had their outcome accepted (%v): a fenced write landed", id, len(w), w)
		}
		for _, w := range accepted[id] {
			if w.pid == pidOf(info.Result) && w.seq == seqOf(info.Result) {
				matched++
			}
		}
	}
	assert.Zero(t, fenced, "fenced writes accepted")
	checkCounts(t, store)
	perTask := runsPerTask(runs)
	total := 0
	for _, id := range ids {
		total += perTask[id]
	}
	t.Logf("chaos: runs per resumable task:%s %.3f on average; %d of %d stored results are a logged accepted write (a kill between the write and its log line loses the line); %d non-resumable tasks, all terminal",
		histogram(perTask, ids), float64(total)/float64(len(ids)), matched, len(ids), len(nonRes))
	require.NotEmpty(t, ids)
}

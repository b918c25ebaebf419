package apcore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var (
	soakFor  = flag.Duration("soak", 10*time.Second, "how long TestSoak runs")
	soakSeed = flag.Uint64("seed", 0, "TestSoak's seed (0: from the clock; the test prints the one it used)")
)

// soakFaults decides the soak's faults: a share of calls fail with
// ErrStoreUnavailable, another share is slowed down. Count, the admission
// check, is left alone so that the cap can be checked exactly.
type soakFaults struct {
	mu       sync.Mutex
	rng      *rand.Rand
	failRate float64
	slowRate float64
	injected atomic.Int64
}

func (s *soakFaults) setRates(fail, slow float64) {
	s.mu.Lock()
	s.failRate, s.slowRate = fail, slow
	s.mu.Unlock()
}

func (s *soakFaults) fault(op string) error {
	if op == "Count" {
		return nil
	}
	s.mu.Lock()
	fail, slow := s.rng.Float64() < s.failRate, s.rng.Float64() < s.slowRate
	s.mu.Unlock()
	if slow {
		time.Sleep(time.Millisecond)
	}
	if fail {
		s.injected.Add(1)
		return &Error{Code: CodeTaskStoreUnavailable, Message: "injected fault in " + op}
	}
	return nil
}

// soakLedger is what the actors saw, checked against the store at the end.
type soakLedger struct {
	mu        sync.Mutex
	accepted  []string
	cancelled map[string]bool // Cancel returned true
	lost      map[string]bool // the store lost the record once
}

func (l *soakLedger) accept(id string) {
	l.mu.Lock()
	l.accepted = append(l.accepted, id)
	l.mu.Unlock()
}

func (l *soakLedger) pick(r *rand.Rand) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.accepted) == 0 {
		return "", false
	}
	// Mostly recent tasks, which are more likely to be active.
	n := len(l.accepted)
	i := n - 1 - r.IntN(min(n, 64))
	if r.IntN(4) == 0 {
		i = r.IntN(n)
	}
	return l.accepted[i], true
}

// allowed reports whether err is one the soak expects under faults.
func allowed(err error) bool {
	return err == nil || errors.Is(err, ErrStoreUnavailable) || errors.Is(err, ErrTaskLimitExceeded) ||
		errors.Is(err, ErrTaskNotFound) || errors.Is(err, ErrReaperAlreadyRunning) ||
		errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// sharedFaultStore is a shared MemoryStore whose calls fail or slow down as
// fault decides, for the soak's replicas.
type sharedFaultStore struct {
	*MemoryStore
	fault func(method string) error
}

func (f *sharedFaultStore) Save(ctx context.Context, t TaskInfo) error {
	if err := f.fault("Save"); err != nil {
		return err
	}
	return f.MemoryStore.Save(ctx, t)
}
func (f *sharedFaultStore) SaveIf(ctx context.Context, t TaskInfo, from ...TaskStatus) (bool, error) {
	if err := f.fault("SaveIf"); err != nil {
		return false, err
	}
	return f.MemoryStore.SaveIf(ctx, t, from...)
}
func (f *sharedFaultStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	if err := f.fault("Get"); err != nil {
		return TaskInfo{}, err
	}
	return f.MemoryStore.Get(ctx, id)
}
func (f *sharedFaultStore) List(ctx context.Context, s TaskStatus) ([]TaskInfo, error) {
	if err := f.fault("List"); err != nil {
		return nil, err
	}
	return f.MemoryStore.List(ctx, s)
}
func (f *sharedFaultStore) Insert(ctx context.Context, t StoredTask, limit int) (bool, error) {
	if err := f.fault("Insert"); err != nil {
		return false, err
	}
	return f.MemoryStore.Insert(ctx, t, limit)
}
func (f *sharedFaultStore) Update(ctx context.Context, t StoredTask, holder string) (bool, error) {
	if err := f.fault("Update"); err != nil {
		return false, err
	}
	return f.MemoryStore.Update(ctx, t, holder)
}
func (f *sharedFaultStore) Claim(ctx context.Context, req ClaimRequest) ([]StoredTask, error) {
	if err := f.fault("Claim"); err != nil {
		return nil, err
	}
	return f.MemoryStore.Claim(ctx, req)
}
func (f *sharedFaultStore) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	if err := f.fault("Lost"); err != nil {
		return nil, err
	}
	return f.MemoryStore.Lost(ctx, owner, ids)
}

// TestSoak runs managers under every kind of load and fault at once for
// -soak (10s by default; half for each of its two runs), then checks that
// they kept their promises: once one manager over a store without
// capabilities, once two replicas over a SharedStore that also loses
// records now and then. It is deterministic in its choices from the
// printed seed (-seed=N to rerun); goroutine scheduling is not.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs in full test runs; -short skips it")
	}
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: seed %d (rerun with -seed=%d), for %v", seed, seed, *soakFor)
	t.Run("one manager, plain store", func(t *testing.T) { soak(t, seed, false) })
	t.Run("two replicas, shared store losing records", func(t *testing.T) { soak(t, seed, true) })
}

// soak is one run of TestSoak.
func soak(t *testing.T, seed uint64, replicas bool) {
	baseline := goleak.IgnoreCurrent()
	const maxConcurrent, maxTasks = 16, 2000

	var running, peak atomic.Int64
	track := func(fn ModuleFunc) Module {
		return ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
			n := running.Add(1)
			defer running.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			return fn(ctx, in)
		})
	}
	sleep := func(ctx context.Context, d time.Duration) error {
		timer := time.NewTimer(d)
		defer timer.Stop()
		select {
		case <-timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var flakyCalls atomic.Int64
	modules := map[string]Module{
		"soak.instant": track(func(ctx context.Context, in map[string]any) (any, error) { return "instant", nil }),
		"soak.slow": track(func(ctx context.Context, in map[string]any) (any, error) {
			if err := sleep(ctx, time.Duration(1+flakyCalls.Load()%7)*time.Millisecond); err != nil {
				return nil, err
			}
			return map[string]any{"slow": true}, nil
		}),
		"soak.stubborn": track(func(ctx context.Context, in map[string]any) (any, error) {
			time.Sleep(2 * time.Millisecond) // ignores ctx for a while
			return "stubborn", nil
		}),
		"soak.fail": track(func(ctx context.Context, in map[string]any) (any, error) { return nil, errors.New("always fails") }),
		"soak.flaky": track(func(ctx context.Context, in map[string]any) (any, error) {
			if flakyCalls.Add(1)%3 != 0 {
				return nil, errors.New("flaky")
			}
			return []any{"flaky", 1.0}, nil
		}),
		"soak.permanent": track(func(ctx context.Context, in map[string]any) (any, error) {
			return nil, Permanent(errors.New("permanent"))
		}),
		"soak.panic": track(func(ctx context.Context, in map[string]any) (any, error) { panic("soak panic") }),
		"soak.timeout": track(func(ctx context.Context, in map[string]any) (any, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		}),
		"soak.cyclic": track(func(ctx context.Context, in map[string]any) (any, error) {
			m := map[string]any{"n": 1}
			m["self"] = m
			return m, nil
		}),
		"soak.deep": track(func(ctx context.Context, in map[string]any) (any, error) {
			var v any = "leaf"
			for range maxResultDepth + 1 {
				v = []any{v}
			}
			return v, nil
		}),
		"soak.nan": track(func(ctx context.Context, in map[string]any) (any, error) {
			return map[string]any{"x": math.NaN()}, nil // keepable in memory; a JSON store would refuse it
		}),
		"soak.goexit": track(func(ctx context.Context, in map[string]any) (any, error) {
			runtime.Goexit()
			return nil, nil
		}),
	}
	names := make([]string, 0, len(modules))
	for n := range modules {
		names = append(names, n)
	}
	sort.Strings(names)

	faults := &soakFaults{rng: rand.New(rand.NewPCG(seed, 1))}
	faults.setRates(0.05, 0.02)
	var overCap atomic.Int64 // times the active count went over maxTasks
	inner := NewMemoryStore()
	checkCap := func() {
		if n, _ := inner.Count(context.Background(), activeStatuses...); n > maxTasks {
			overCap.Add(1)
		}
	}
	var store TaskStore
	if replicas {
		store = &sharedFaultStore{MemoryStore: inner, fault: faults.fault}
	} else {
		store = &faultStore{inner: inner, fault: faults.fault, onSave: checkCap}
	}
	var managers []*TaskManager
	for range map[bool]int{false: 1, true: 2}[replicas] {
		m, err := NewTaskManager(registry(t, modules), WithStore(store),
			WithMaxConcurrent(maxConcurrent), WithMaxTasks(maxTasks))
		require.NoError(t, err)
		managers = append(managers, m)
	}
	pickManager := func(r *rand.Rand) *TaskManager { return managers[r.IntN(len(managers))] }
	var lostRecords atomic.Int64

	ledger := &soakLedger{cancelled: map[string]bool{}, lost: map[string]bool{}}
	var unexpected sync.Map // error text -> count
	note := func(what string, err error) {
		if !allowed(err) {
			unexpected.Store(what+": "+err.Error(), true)
		}
	}
	ctx, stop := context.WithTimeout(context.Background(), *soakFor/2)
	defer stop()
	var wg sync.WaitGroup
	actor := func(i int, fn func(r *rand.Rand)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, uint64(i+2)))
			for ctx.Err() == nil {
				fn(r)
			}
		}()
	}
	bg := context.Background()
	for i := 0; i < 4; i++ { // submitters
		actor(i, func(r *rand.Rand) {
			name := names[r.IntN(len(names))]
			var opts []SubmitOption
			switch name {
			case "soak.flaky", "soak.fail", "soak.panic", "soak.permanent":
				opts = append(opts, WithRetry(RetryConfig{MaxRetries: r.IntN(4), RetryDelay: time.Duration(1+r.IntN(3)) * time.Millisecond}))
			case "soak.timeout":
				opts = append(opts, WithTimeout(time.Duration(1+r.IntN(3))*time.Millisecond),
					WithRetry(RetryConfig{MaxRetries: r.IntN(2), RetryDelay: time.Millisecond}))
			}
			if replicas && r.IntN(3) == 0 {
				opts = append(opts, WithResumable())
			}
			id, err := pickManager(r).Submit(bg, name, map[string]any{"n": r.IntN(100)}, opts...)
			note("Submit", err)
			if replicas {
				checkCap()
			}
			if err == nil {
				ledger.accept(id)
			} else if errors.Is(err, ErrTaskLimitExceeded) {
				time.Sleep(time.Millisecond)
			}
		})
	}
	for i := 4; i < 6; i++ { // cancellers
		actor(i, func(r *rand.Rand) {
			id, ok := ledger.pick(r)
			if !ok {
				return
			}
			done, err := pickManager(r).Cancel(bg, id)
			note("Cancel", err)
			if done {
				ledger.mu.Lock()
				ledger.cancelled[id] = true
				ledger.mu.Unlock()
			}
			time.Sleep(time.Duration(r.IntN(500)) * time.Microsecond)
		})
	}
	actor(6, func(r *rand.Rand) { // readers
		id, ok := ledger.pick(r)
		if !ok {
			return
		}
		m := pickManager(r)
		switch r.IntN(4) {
		case 0:
			_, err := m.Status(bg, id)
			note("Status", err)
		case 1:
			wctx, cancel := context.WithTimeout(bg, time.Duration(r.IntN(5))*time.Millisecond)
			_, err := m.Wait(wctx, id)
			cancel()
			note("Wait", err)
		case 2:
			_, err := m.List(bg, allStatuses[r.IntN(len(allStatuses))])
			note("List", err)
		case 3:
			_, err := m.TaskCount(bg)
			note("TaskCount", err)
		}
	})
	if replicas {
		actor(8, func(r *rand.Rand) { // the store loses a record now and then
			if id, ok := ledger.pick(r); ok && r.IntN(20) == 0 {
				if deleted, _ := inner.Remove(bg, id); deleted {
					lostRecords.Add(1)
					ledger.mu.Lock()
					ledger.lost[id] = true
					ledger.mu.Unlock()
				}
			}
			time.Sleep(time.Millisecond)
		})
	}
	// The janitor sweeps records some time after they end. With replicas,
	// not before the owner of a task cancelled elsewhere has written its
	// outcome, which during the faults can wait in memory for seconds (see
	// kept.go): a record deleted before its owner has written its outcome
	// is written back with that outcome (see TestOwnerWritesBackALostRecord),
	// as a store that lost it would want. So the replicas' janitor runs
	// every sweep but finds nothing old enough to delete.
	minAge := time.Duration(0)
	if replicas {
		minAge = time.Hour
	}
	actor(7, func(r *rand.Rand) { // janitor: cleanup, reap, the reaper
		m := pickManager(r)
		switch r.IntN(3) {
		case 0:
			_, err := m.Cleanup(bg, minAge+time.Duration(r.IntN(50))*time.Millisecond)
			note("Cleanup", err)
		case 1:
			_, err := m.Reap(bg, time.Now().Add(-minAge-time.Duration(r.IntN(50))*time.Millisecond))
			note("Reap", err)
		case 2:
			h, err := m.StartReaper(ReaperConfig{TTL: minAge + 20*time.Millisecond, SweepInterval: time.Millisecond})
			note("StartReaper", err)
			if err == nil {
				time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
				note("Stop", h.Stop(bg))
			}
		}
		time.Sleep(time.Millisecond)
	})
	wg.Wait()

	// The faults stop; Shutdown must settle everything and write every
	// outcome it kept while the store was failing.
	faults.setRates(0, 0)
	sctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	var lastShutdown time.Time // when the last manager's Shutdown began
	for _, m := range managers {
		lastShutdown = time.Now()
		require.NoError(t, m.Shutdown(sctx))
	}
	// A resumable task handed back for a retry that was not due yet when
	// the last manager's Shutdown looked is no orphan: it waits in the
	// store, held by no one, for the next manager to run when it is due.
	waiting := func(id string) bool {
		sh := inner.records.shard(id)
		sh.mu.Lock()
		defer sh.mu.Unlock()
		r := sh.m[id]
		return r != nil && r.info.Status == StatusPending && r.holder == nil && r.shared != nil && r.shared.resumable && r.shared.notBefore.After(lastShutdown)
	}
	// Goroutines are back to what they were before the soak. goleak's own
	// retries last about half a second, which a machine busy with other
	// suites can outlast while the last workers and timers wind down: a
	// failure here must mean a leak, not a slow machine, so it looks again
	// for up to 10s and then names the goroutines left.
	for deadline := time.Now().Add(10 * time.Second); ; {
		err := goleak.Find(baseline)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines were left running 10s after every manager shut down: %v", err)
			break
		}
	}
	for _, m := range managers {
		assert.Empty(t, m.tasks.values(), "no task is still active in memory")
		assert.Zero(t, m.nKept.Load(), "every kept outcome reached the store")
	}
	m := managers[0]

	unexpected.Range(func(k, _ any) bool {
		t.Errorf("unexpected error during the soak: %s", k)
		return true
	})
	all, err := inner.List(bg, "")
	require.NoError(t, err)
	counts := map[TaskStatus]int{}
	for _, info := range all {
		counts[info.Status]++
		switch {
		case waiting(info.TaskID):
		case info.Status == StatusPending || info.Status == StatusRunning:
			sh := inner.records.shard(info.TaskID)
			sh.mu.Lock()
			r := sh.m[info.TaskID]
			owner, res := r.ownerName(), r.shared != nil && r.shared.resumable
			sh.mu.Unlock()
			t.Errorf("task %s (%s) is still %s after Shutdown (held by %q, resumable %v, leases %v)", info.TaskID, info.ModuleID, info.Status, owner, res, inner.leases)
		case info.Status == StatusCompleted:
			if info.Result == nil {
				t.Errorf("completed task %s has no result", info.TaskID)
			}
		case info.Status == StatusFailed:
			if info.Error == "" || info.ErrorCode == "" {
				t.Errorf("failed task %s has no error or no code: %q %q", info.TaskID, info.Error, info.ErrorCode)
			}
		}
		switch info.ModuleID {
		case "soak.cyclic", "soak.deep", "soak.goexit":
			if info.Status == StatusCompleted {
				t.Errorf("task %s of %s completed; it must fail", info.TaskID, info.ModuleID)
			}
		}
	}
	for _, id := range ledger.accepted {
		info, err := m.Status(bg, id)
		if errors.Is(err, ErrTaskNotFound) {
			continue // swept by Cleanup, Reap or the reaper: terminal by then
		}
		require.NoError(t, err)
		assert.True(t, info.Status.IsTerminal() || waiting(id), "task %s is %s", id, info.Status)
		if ledger.cancelled[id] && !ledger.lost[id] { // a lost record takes its cancel with it
			assert.Equal(t, StatusCancelled, info.Status, "Cancel returned true for %s", id)
			assert.Nil(t, info.Result, "cancelled task %s has a result", id)
		}
	}
	for _, st := range allStatuses {
		n, err := inner.Count(bg, st)
		require.NoError(t, err)
		assert.Equal(t, counts[st], n, "Count(%s) disagrees with List", st)
	}
	assert.Empty(t, inner.held.counts(), "owners counted as holding active records after every task ended")
	assert.LessOrEqual(t, peak.Load(), int64(maxConcurrent*len(managers)), "peak concurrency")
	assert.Zero(t, overCap.Load(), "the active count went over max_tasks")

	var parts []string
	for _, st := range allStatuses {
		parts = append(parts, fmt.Sprintf("%s %d", st, counts[st]))
	}
	t.Logf("soak (%d manager(s)): %d tasks accepted, %d cancelled by Cancel, %d still stored (%s), %d faults injected, %d records lost by the store, peak concurrency %d/%d",
		len(managers), len(ledger.accepted), len(ledger.cancelled), len(all), strings.Join(parts, ", "),
		faults.injected.Load(), lostRecords.Load(), peak.Load(), maxConcurrent*len(managers))
}

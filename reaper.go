package apcore

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Reaper defaults, from the protocol.
const (
	defaultReaperTTL   = time.Hour
	defaultReaperSweep = 5 * time.Minute
)

// ReaperConfig configures the background sweeper started by StartReaper.
// Zero fields take the defaults: TTL 1h, SweepInterval 5m.
type ReaperConfig struct {
	// TTL is how long a terminal record is kept after CompletedAt.
	// Default 1h; negative is invalid.
	TTL time.Duration
	// SweepInterval is the time between sweeps. Default 5m; negative is
	// invalid.
	SweepInterval time.Duration
}

// DefaultReaperConfig returns the protocol's defaults: TTL 1h, a sweep every
// 5 minutes.
func DefaultReaperConfig() ReaperConfig {
	return ReaperConfig{TTL: defaultReaperTTL, SweepInterval: defaultReaperSweep}
}

// ReaperHandle controls a running reaper; see TaskManager.StartReaper.
type ReaperHandle struct {
	m        *TaskManager
	cancel   context.CancelFunc // stops the sweeper, and a sweep in flight
	stopOnce sync.Once
	done     chan struct{} // closed when the sweeper has returned
}

// StartReaper starts the opt-in background sweeper: every SweepInterval it
// deletes the terminal records that completed more than TTL ago (one Reap
// with now - TTL). It logs how many it deleted at debug level and a store
// failure as a warning, then tries again at the next sweep. It never deletes
// an active task. A manager runs at most one reaper: a second StartReaper
// before the first handle's Stop fails with REAPER_ALREADY_RUNNING. Shutdown
// stops it too.
func (m *TaskManager) StartReaper(cfg ReaperConfig) (*ReaperHandle, error) {
	if cfg.TTL < 0 || cfg.SweepInterval < 0 {
		return nil, invalidf("StartReaper: TTL (%v) and SweepInterval (%v) must be 0 (default) or more", cfg.TTL, cfg.SweepInterval)
	}
	if cfg.TTL == 0 {
		cfg.TTL = defaultReaperTTL
	}
	if cfg.SweepInterval == 0 {
		cfg.SweepInterval = defaultReaperSweep
	}
	m.reaperMu.Lock()
	defer m.reaperMu.Unlock()
	if m.reaper != nil {
		return nil, &Error{Code: CodeReaperAlreadyRunning, Message: "A reaper is already running for this task manager; stop it first"}
	}
	if m.closed.Load() {
		return nil, &Error{Code: CodeTaskManagerClosed, Message: "Task manager is shut down"}
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &ReaperHandle{m: m, cancel: cancel, done: make(chan struct{})}
	m.reaper = h
	go h.run(ctx, cfg)
	return h, nil
}

// run sweeps until stopped.
func (h *ReaperHandle) run(ctx context.Context, cfg ReaperConfig) {
	defer close(h.done)
	ticker := time.NewTicker(cfg.SweepInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done(): // stopped; a sweep in flight sees it too
			return
		case <-ticker.C:
		}
		reaper{h.m, cfg.TTL}.runOnce(ctx)
	}
}

// reaper is the component that deletes expired records: StartReaper's
// handle runs it every SweepInterval.
type reaper struct {
	m   *TaskManager
	ttl time.Duration
}

// runOnce deletes the terminal records that completed more than ttl ago
// and returns how many. A sweep is bounded by the store timeout: what it
// did not reach waits for the next one.
func (r reaper) runOnce(ctx context.Context) int {
	sweep, cancel := context.WithTimeout(ctx, r.m.storeTimeout)
	n, err := r.m.Reap(sweep, time.Now().Add(-r.ttl))
	cancel()
	if n > 0 {
		r.m.log.Debug("apcore: reaper deleted expired tasks", "count", n)
	}
	if err != nil && ctx.Err() == nil {
		r.m.log.Warn("apcore: reaper sweep failed; will retry at the next sweep", "error", err)
	}
	return n
}

// Stop signals the sweeper and waits for it to end, or for ctx to end (then
// it returns ctx's error and the sweeper ends on its own). After Stop the
// manager may start a new reaper. Stop is idempotent.
func (h *ReaperHandle) Stop(ctx context.Context) error {
	if err := checkCtx(ctx, "ReaperHandle.Stop"); err != nil {
		return err
	}
	h.signal()
	select {
	case <-h.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// signal tells the sweeper to stop and frees the manager for a new reaper;
// it does not wait.
func (h *ReaperHandle) signal() {
	h.stopOnce.Do(func() {
		h.cancel()
		h.m.reaperMu.Lock()
		if h.m.reaper == h {
			h.m.reaper = nil
		}
		h.m.reaperMu.Unlock()
	})
}

// Cleanup deletes terminal records whose reference time (CompletedAt, or
// SubmittedAt when that is unset) is at least maxAge in the past, and returns
// how many it deleted. Active tasks are never deleted; a negative maxAge
// deletes every terminal record.
func (m *TaskManager) Cleanup(ctx context.Context, maxAge time.Duration) (int, error) {
	if err := checkCtx(ctx, "Cleanup"); err != nil {
		return 0, err
	}
	if sw, ok := m.store.(Sweeper); ok {
		// A reference time at most cutoff is one strictly before cutoff+1ns.
		before := time.Now().Add(-maxAge).Add(time.Nanosecond)
		if maxAge < 0 {
			before = sweepEverything
		}
		return sweepAll(ctx, sw, before)
	}
	all, err := m.store.List(ctx, "")
	if err != nil {
		return 0, storeErr("list", err)
	}
	cutoff := time.Now()
	var ids []string
	for i := range all {
		t := &all[i]
		if !t.Status.IsTerminal() {
			continue
		}
		ref := t.CompletedAt
		if ref.IsZero() {
			ref = t.SubmittedAt
		}
		if maxAge < 0 || cutoff.Sub(ref) >= maxAge {
			ids = append(ids, t.TaskID)
		}
	}
	return m.deleteAll(ctx, ids)
}

// FailStale ends tasks that a crashed process left active. It marks failed
// every pending or running record in the store that this manager does not
// run and whose last start (StartedAt, or SubmittedAt if it never started)
// is at least olderThan in the past, and returns how many it marked. The
// error message says the task was abandoned.
//
// A record only ever leaves pending or running through the manager that
// runs it, so after a crash its records would stay active for good and
// count against max_tasks. Call FailStale at start-up (olderThan 0 is right
// when no other process shares the store), or now and then with an
// olderThan longer than any task runs when replicas share it: a task that
// another live replica still runs is marked failed too, and that replica's
// late result is then refused. Each record is changed with SaveIf when the
// store has it, so a task that ends meanwhile keeps its own outcome.
func (m *TaskManager) FailStale(ctx context.Context, olderThan time.Duration) (int, error) {
	if err := checkCtx(ctx, "FailStale"); err != nil {
		return 0, err
	}
	if olderThan < 0 {
		return 0, invalidf("FailStale(%v): the age must be 0 or more", olderThan)
	}
	cutoff := time.Now().Add(-olderThan)
	n := 0
	var errs []error
	for _, status := range activeStatuses {
		records, err := m.store.List(ctx, status)
		if err != nil {
			return n, storeErr("list", err)
		}
		for i := range records {
			info := &records[i]
			last := info.StartedAt
			if last.IsZero() {
				last = info.SubmittedAt
			}
			if last.After(cutoff) {
				continue
			}
			if _, ours := m.tasks.load(info.TaskID); ours {
				continue
			}
			if m.isKept(info.TaskID) {
				continue // it ended here; the store has not heard yet
			}
			info.Status, info.CompletedAt, info.Result = StatusFailed, now(), nil
			info.Error = "abandoned: the process running it stopped before it ended (marked by FailStale)"
			info.ErrorCode = CodeTaskAbandoned
			res, err := m.write(ctx, nil, info)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if res == written {
				n++
			}
		}
	}
	return n, errors.Join(errs...)
}

// Reap is one reaper sweep: it deletes the terminal records whose
// CompletedAt is strictly before before and returns how many it deleted.
// With a Sweeper store it deletes a batch per store call (and a terminal
// record with no CompletedAt goes by its SubmittedAt); otherwise it deletes
// what the store's ListExpired(before) returns, one record at a time.
func (m *TaskManager) Reap(ctx context.Context, before time.Time) (int, error) {
	if err := checkCtx(ctx, "Reap"); err != nil {
		return 0, err
	}
	if sw, ok := m.store.(Sweeper); ok {
		return sweepAll(ctx, sw, before)
	}
	expired, err := m.store.ListExpired(ctx, before)
	if err != nil {
		return 0, storeErr("list expired", err)
	}
	ids := make([]string, 0, len(expired))
	for i := range expired {
		if expired[i].Status.IsTerminal() { // a faulty store must not cost us an active task
			ids = append(ids, expired[i].TaskID)
		}
	}
	return m.deleteAll(ctx, ids)
}

// deleteAll deletes ids, going on past failures; it returns how many this
// call deleted (with a Remover; otherwise how many Deletes did not fail)
// and the failures joined.
func (m *TaskManager) deleteAll(ctx context.Context, ids []string) (int, error) {
	remover, _ := m.store.(Remover)
	n := 0
	var errs []error
	for _, id := range ids {
		deleted := true
		var err error
		if remover != nil {
			deleted, err = remover.Remove(ctx, id)
		} else {
			err = m.store.Delete(ctx, id)
		}
		if err != nil {
			errs = append(errs, storeErr("delete "+id, err))
			if ctx.Err() != nil {
				break
			}
			continue
		}
		if deleted {
			n++
		}
	}
	return n, errors.Join(errs...)
}

// sweepEverything is a Before later than any record's reference time: what
// Cleanup with a negative age sweeps with.
var sweepEverything = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// sweepAll calls sw.Sweep a batch at a time until a batch comes back short,
// and returns how many records it deleted.
func sweepAll(ctx context.Context, sw Sweeper, before time.Time) (int, error) {
	n := 0
	for {
		k, err := sw.Sweep(ctx, SweepRequest{Before: before, Limit: sweepBatch})
		n += k
		if err != nil {
			return n, storeErr("sweep", err)
		}
		if k < sweepBatch {
			return n, nil
		}
		if err := ctx.Err(); err != nil {
			return n, storeErr("sweep", err)
		}
	}
}

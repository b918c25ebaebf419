package apcore

import (
	"context"
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
	m.admit.Lock()
	closed := m.closed
	m.admit.Unlock()
	if closed {
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
		n, err := h.m.Reap(ctx, time.Now().Add(-cfg.TTL))
		if n > 0 {
			h.m.log.Debug("apcore: reaper deleted expired tasks", "count", n)
		}
		if err != nil && ctx.Err() == nil {
			h.m.log.Warn("apcore: reaper sweep failed; will retry at the next sweep", "error", err)
		}
	}
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

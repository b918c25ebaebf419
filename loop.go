package apcore

import (
	"context"
	"time"
)

// loop runs one piece of a manager's background work (a component: the
// lease keeper, the recoverer, the remote-cancel watcher, the claimer) on
// a goroutine of its own: runOnce at once, then every
// interval and whenever woken, until Stop. Each component is a type with
// its own runOnce, tested on its own; a loop only schedules it, so a
// store call that hangs in one component never delays another. The other
// components run on loops of their own making: the outcome writer (with
// backoff, only while outcomes are kept), the reaper (StartReaper's
// interval), each schedule (its ticks) and the wake-ups of tasks due later
// (one timer, at the earliest).
type loop struct {
	every   time.Duration
	runOnce func(ctx context.Context)
	wake    chan struct{}
	stop    context.CancelFunc
	done    chan struct{}
}

// newLoop returns a loop that runs runOnce every interval once started.
func newLoop(every time.Duration, runOnce func(ctx context.Context)) *loop {
	return &loop{every: every, runOnce: runOnce, wake: make(chan struct{}, 1)}
}

// Start starts the loop's goroutine.
func (l *loop) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop, l.done = cancel, make(chan struct{})
	go l.run(ctx)
}

// Stop cancels the context of the run under way, if any, and waits for
// the goroutine to end. It does nothing for a loop never started.
func (l *loop) Stop() {
	if l == nil || l.stop == nil {
		return
	}
	l.stop()
	<-l.done
}

// Wake asks for a run now; a run already asked for absorbs it.
func (l *loop) Wake() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

func (l *loop) run(ctx context.Context) {
	defer close(l.done)
	ticker := time.NewTicker(l.every)
	defer ticker.Stop()
	for {
		l.runOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-l.wake:
		}
	}
}

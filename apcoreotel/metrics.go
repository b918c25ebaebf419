package apcoreotel

import (
	"context"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
	"go.opentelemetry.io/otel/metric"
)

// Metric names recorded by Instrument.
const (
	MetricSubmitted       = "apcore.tasks.submitted"       // counter, by module
	MetricFinished        = "apcore.tasks.finished"        // counter, by module and final status
	MetricAttemptDuration = "apcore.task.attempt.duration" // histogram (s), by module and the status the attempt led to
	MetricQueueWait       = "apcore.task.queue.wait"       // histogram (s), by module: submitted (or run_at, when later) to first start
	MetricActive          = "apcore.tasks.active"          // up-down counter, by status (pending, running)
	MetricProgress        = "apcore.task.progress.updates" // counter, by module
)

// Instrument records metrics of mgr's tasks from its transitions (see
// apcore.TaskManager.Subscribe): tasks submitted (by module) and finished
// (by module and final status), each attempt's duration and the queue wait
// before a task's first attempt (histograms, in seconds; the wait counts
// from the task's run_at when it has a later one: waiting for its time is
// no queue wait), the tasks active
// on this manager (by status: from a task's first active record here to
// its end, or until it is handed back to the store for another replica)
// and progress reports (by module). Each
// manager reports what it does itself: sum over replicas in the metrics
// backend. stop removes the observer; it is safe to call more than once.
func Instrument(mgr *apcore.TaskManager, opts ...Option) (stop func(), err error) {
	if mgr == nil {
		return nil, &apcore.Error{Code: apcore.CodeInvalidInput, Message: "apcoreotel.Instrument: the manager is nil"}
	}
	c := newConfig(opts)
	meter := c.mp.Meter(ScopeName)
	in := &instruments{tasks: map[string]*seen{}}
	if in.submitted, err = meter.Int64Counter(MetricSubmitted, metric.WithUnit("{task}"),
		metric.WithDescription("Tasks submitted to the manager.")); err != nil {
		return nil, err
	}
	if in.finished, err = meter.Int64Counter(MetricFinished, metric.WithUnit("{task}"),
		metric.WithDescription("Tasks that reached a final status.")); err != nil {
		return nil, err
	}
	if in.duration, err = meter.Float64Histogram(MetricAttemptDuration, metric.WithUnit("s"),
		metric.WithDescription("How long each attempt of a task ran.")); err != nil {
		return nil, err
	}
	if in.wait, err = meter.Float64Histogram(MetricQueueWait, metric.WithUnit("s"),
		metric.WithDescription("How long a task waited from submission to its first start.")); err != nil {
		return nil, err
	}
	if in.active, err = meter.Int64UpDownCounter(MetricActive, metric.WithUnit("{task}"),
		metric.WithDescription("Tasks pending or running on this manager.")); err != nil {
		return nil, err
	}
	if in.progress, err = meter.Int64Counter(MetricProgress, metric.WithUnit("{report}"),
		metric.WithDescription("Progress reports of running tasks.")); err != nil {
		return nil, err
	}
	cancel, err := mgr.Subscribe(in.observe)
	if err != nil {
		return nil, err
	}
	var once sync.Once
	return func() { once.Do(cancel) }, nil
}

type instruments struct {
	submitted, finished, progress metric.Int64Counter
	duration, wait                metric.Float64Histogram
	active                        metric.Int64UpDownCounter

	mu    sync.Mutex
	tasks map[string]*seen // active tasks: removed when they end
}

// seen is what Instrument remembers of an active task.
type seen struct {
	status  apcore.TaskStatus
	retries int       // the RetryCount of its last record
	started time.Time // this attempt's start, when running
}

// observe is the manager's observer: it must return quickly. It counts on
// the manager's promise that a task's calls come in order, not on the
// goroutine they come on.
//
// A task counts as active here from its first pending or running record
// until its end, or until it is handed back: a resumable task that Drain
// (or a manager closing) gives back to the store goes pending again with
// the same RetryCount, held by no one, for another replica to run; this
// manager will see no end of it. A retry always counts one more retry, so
// a pending record with the RetryCount this manager last saw is a hand
// back, and so is a first record that is pending but was started before
// (a claimed task handed back unstarted).
func (in *instruments) observe(info apcore.TaskInfo) {
	now := time.Now()
	ctx := context.Background()
	module := AttrModuleID.String(info.ModuleID)
	in.mu.Lock()
	prev, known := in.tasks[info.TaskID]
	var before apcore.TaskStatus
	var attemptStart time.Time
	handedBack := false
	if known {
		before, attemptStart = prev.status, prev.started
		handedBack = info.Status == apcore.StatusPending && info.RetryCount == prev.retries
	}
	switch {
	case !known && info.Status == apcore.StatusPending && (info.RetryCount > 0 || !info.StartedAt.IsZero()):
		// Handed back before this manager saw it: not active here.
	case !known && info.Status.IsActive():
		prev = &seen{}
		in.tasks[info.TaskID] = prev
	case known && (info.Status.IsTerminal() || handedBack):
		delete(in.tasks, info.TaskID)
	}
	if prev != nil {
		prev.status, prev.retries = info.Status, info.RetryCount
		if info.Status == apcore.StatusRunning && before != apcore.StatusRunning {
			prev.started = now
		}
	}
	in.mu.Unlock()

	if !known && info.Status == apcore.StatusPending && info.RetryCount == 0 && info.StartedAt.IsZero() {
		in.submitted.Add(ctx, 1, metric.WithAttributes(module))
	}
	if before == info.Status && !handedBack {
		if info.Status == apcore.StatusRunning {
			in.progress.Add(ctx, 1, metric.WithAttributes(module))
		}
		return
	}
	if before.IsActive() {
		in.active.Add(ctx, -1, metric.WithAttributes(AttrStatus.String(string(before))))
	}
	if info.Status.IsActive() && prev != nil && !handedBack {
		in.active.Add(ctx, 1, metric.WithAttributes(AttrStatus.String(string(info.Status))))
	}
	if before == apcore.StatusRunning && !attemptStart.IsZero() {
		in.duration.Record(ctx, now.Sub(attemptStart).Seconds(),
			metric.WithAttributes(module, AttrStatus.String(string(info.Status))))
	}
	if info.Status == apcore.StatusRunning && info.RetryCount == 0 && !info.StartedAt.IsZero() && !info.SubmittedAt.IsZero() {
		d := info.StartedAt.Sub(info.SubmittedAt)
		if info.RunAt != nil && info.RunAt.After(info.SubmittedAt) {
			// A replica whose clock runs ahead of the submitter's may
			// start it a moment before its run_at: no wait then.
			d = max(info.StartedAt.Sub(*info.RunAt), 0)
		}
		if d >= 0 {
			in.wait.Record(ctx, d.Seconds(), metric.WithAttributes(module))
		}
	}
	if info.Status.IsTerminal() {
		in.finished.Add(ctx, 1, metric.WithAttributes(module, AttrStatus.String(string(info.Status))))
	}
}

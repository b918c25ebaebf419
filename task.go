package apcore

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// taskState is where a task of this manager is in its life; lifecycle.go
// has the table of its transitions.
type taskState uint8

const (
	stateQueued  taskState = iota // pending: in the scheduler's queue, or about to be
	stateRunning                  // a worker is calling the module
	stateBackoff                  // pending: waiting out a retry delay
	stateEnding                   // its end is decided; the store write is under way
	stateDone                     // ended here (final) or let go (no final); out of the table
)

// active reports whether no end has been decided for the task yet.
func (s taskState) active() bool { return s < stateEnding }

// task is the manager's handle on one of its active tasks. The manager keeps
// it in its own table (TaskManager.tasks) from Submit until its end has
// been written; no store ever sees it.
type task struct {
	id, moduleID string
	inputs       map[string]any
	ctx          taskCtx // what the module runs with
	retry        RetryConfig
	timeout      time.Duration
	submittedAt  time.Time
	holder       string  // with a SharedStore: the manager id that holds the task in the store
	worker       *worker // the worker running the current attempt, for goexited

	// wmu orders this manager's store writes of the task: each write is
	// made holding it, in the order the transitions were decided (seq),
	// and a write overtaken by a later one is skipped. Nothing but the
	// write itself happens under it, and no caller waits for it: a caller
	// whose write may block hands it to a goroutine (see lifecycle.go).
	wmu sync.Mutex

	// mu guards the task's state. It is held only to decide a transition
	// and to read or change the fields below: never across store I/O, a
	// sleep or a user's callback. See the lock order in lifecycle.go.
	mu         sync.Mutex
	seq, wrote uint32 // transitions decided; the latest one written
	state      taskState
	ending     statusCode // the status an ending task ends in (stateEnding)
	resumable  bool       // submitted WithResumable: it goes back to the store between attempts
	claimed    bool       // running in the store already: claimed, or saved running by Submit (see start)
	watched    bool       // in the manager's table of tasks in backoff (see watcher)
	queued     bool       // in the scheduler's queue; guarded by scheduler.mu
	priority   int8       // WithPriority: its place in the scheduler's queue
	notifying  bool       // a goroutine is making the task's observer calls (see emit)
	startedAt  time.Time
	retryCount int
	cancel     context.CancelFunc // set while running: ends the attempt's timeout context
	timer      *time.Timer        // set while in backoff

	notBefore     time.Time     // a resumable task handed back: when it is due again
	progress      float64       // the last ReportProgress, 0-100
	progressMsg   string        // and its message
	progressTimer *time.Timer   // set while a progress write is due (see progress.go)
	done          chan struct{} // made by the first Wait, closed when the task is done
	final         *TaskInfo     // the terminal record, kept once done if a Wait needs it
	events        *taskEvents   // observer calls queued while another was being made
	later         *taskLater    // WithRunAt or WithUniqueKey, nil for most tasks

	// Queue links, guarded by scheduler.mu.
	prev, next *task
}

// taskEvents holds a task's observer calls waiting to be made, in order,
// while another goroutine makes one (see emit and deliver in
// lifecycle.go); most tasks never need it.
type taskEvents struct {
	queue []TaskInfo
}

// taskLater is what a task submitted WithRunAt or WithUniqueKey keeps
// beside its handle.
type taskLater struct {
	runAt     time.Time // zero: none
	uniqueKey string
}

// statusCode is a TaskStatus in one byte, for the task handle.
type statusCode uint8

var statusCodes = [...]TaskStatus{"", StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}

// codeOf returns s's code.
func codeOf(s TaskStatus) statusCode {
	for i, x := range statusCodes {
		if x == s {
			return statusCode(i)
		}
	}
	return 0
}

// status returns the status c stands for.
func (c statusCode) status() TaskStatus { return statusCodes[c] }

// record fills info with the task's record in status, from what the handle
// knows.
func (t *task) record(info *TaskInfo, status TaskStatus) {
	*info = TaskInfo{
		TaskID: t.id, ModuleID: t.moduleID, Status: status,
		SubmittedAt: t.submittedAt, StartedAt: t.startedAt,
		RetryCount: t.retryCount, MaxRetries: t.retry.MaxRetries,
		Progress: t.progress, ProgressMessage: t.progressMsg,
		Priority: int(t.priority),
	}
	if x := t.later; x != nil {
		info.UniqueKey = x.uniqueKey
		if !x.runAt.IsZero() {
			at := x.runAt
			info.RunAt = &at
		}
	}
}

// interrupt cancels the module's context and the attempt's timeout context,
// so a running module sees ctx.Done(). t.mu is held.
func (t *task) interrupt() {
	t.ctx.cancel()
	if t.cancel != nil {
		t.cancel()
	}
}

// timeoutError is the error of an attempt that ran past its timeout.
func (t *task) timeoutError(cause error) error {
	return &Error{
		Code:    CodeModuleTimeout,
		Message: fmt.Sprintf("Module %s timed out after %v", t.moduleID, t.timeout),
		Cause:   cause,
	}
}

// wait blocks until t is done or ctx ends. ok is false when t is done
// without a record here (it ended before anyone waited, or this manager let
// go of it): the caller reads the store.
func (t *task) wait(ctx context.Context) (info TaskInfo, ok bool, err error) {
	t.mu.Lock()
	if t.state == stateDone {
		final := t.final
		t.mu.Unlock()
		if final == nil {
			return TaskInfo{}, false, nil
		}
		return final.clone(), true, nil
	}
	if t.done == nil {
		t.done = make(chan struct{})
	}
	done := t.done
	t.mu.Unlock()
	select {
	case <-done:
		t.mu.Lock()
		final := t.final
		t.mu.Unlock()
		if final == nil {
			return TaskInfo{}, false, nil // let go of: another manager has it
		}
		return final.clone(), true, nil
	case <-ctx.Done():
		return TaskInfo{}, true, ctx.Err()
	}
}

// taskCtx is the context a task's module runs with: the values of Submit's
// context (parent), no deadline and no cancellation of its own but Cancel's
// and Shutdown's. It lives inside the task, so a task costs no context
// allocation; it implements AfterFunc, so a context a module derives from it
// costs no goroutine (the context package uses AfterFunc to propagate
// cancellation). BenchmarkTaskContext compares it with
// context.WithCancel on a WithoutCancel parent.
type taskCtx struct {
	parent context.Context // Submit's ctx without its cancellation
	wg     *sync.WaitGroup // counts AfterFunc goroutines that cancel starts
	task   *task           // the task, for ReportProgress (see Value)
	m      *TaskManager    // its manager

	mu     sync.Mutex
	done   chan struct{} // made by the first Done
	err    error
	afters []*afterFunc
}

// afterFunc is one AfterFunc registration.
type afterFunc struct{ f func() }

var _ context.Context = (*taskCtx)(nil)

// Deadline reports the parent's deadline, which is none: Submit drops it.
func (c *taskCtx) Deadline() (time.Time, bool) { return c.parent.Deadline() }

// Done returns a channel closed when the task is cancelled.
func (c *taskCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

// Err returns context.Canceled once the task is cancelled, nil before.
func (c *taskCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// taskKey is the context key under which a task's context names its task.
type taskKey struct{}

// Value returns the value Submit's context has for key; for taskKey, the
// task itself, which is how ReportProgress finds it through any context a
// module derives.
func (c *taskCtx) Value(key any) any {
	if _, ok := key.(taskKey); ok {
		return c
	}
	return c.parent.Value(key)
}

// String names the context in debugging output.
func (c *taskCtx) String() string { return "apcore.taskContext" }

// AfterFunc runs f in its own goroutine once the task is cancelled (at once
// if it already is); stop unregisters f and reports whether it did so
// before f started. It has the semantics of context.AfterFunc.
func (c *taskCtx) AfterFunc(f func()) (stop func() bool) {
	a := &afterFunc{f: f}
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		// Not counted: a module's helper may register after the worker has
		// returned, when the WaitGroup may be at a zero Shutdown waits on.
		go f()
		return func() bool { return false }
	}
	c.afters = append(c.afters, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for i, x := range c.afters {
			if x == a {
				c.afters = append(c.afters[:i], c.afters[i+1:]...)
				return true
			}
		}
		return false
	}
}

// cancel cancels the task's context; later calls do nothing. The manager
// calls it only for an active task, under the task's lock, before Shutdown
// starts waiting: the WaitGroup it adds to is then never at a zero that
// Shutdown waits on (see lifecycle.go).
func (c *taskCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	afters := c.afters
	c.afters = nil
	c.mu.Unlock()
	c.wg.Add(len(afters))
	for _, a := range afters {
		go func() {
			defer c.wg.Done()
			a.f()
		}()
	}
}

// TaskFromContext returns the record, as it stands, of the task whose
// module was given ctx (or a context derived from it), and true; or false
// for any other context. Modules use it to log their task's id, and
// integrations (apcoreotel) to name an attempt: the attempt number is
// RetryCount + 1.
func TaskFromContext(ctx context.Context) (TaskInfo, bool) {
	if ctx == nil {
		return TaskInfo{}, false
	}
	tc, _ := ctx.Value(taskKey{}).(*taskCtx)
	if tc == nil || tc.task == nil {
		return TaskInfo{}, false
	}
	t := tc.task
	t.mu.Lock()
	defer t.mu.Unlock()
	var info TaskInfo
	status := StatusPending
	switch t.state {
	case stateRunning:
		status = StatusRunning
	case stateEnding:
		status = t.ending.status()
	case stateDone:
		if t.final != nil {
			return t.final.clone(), true
		}
		// Let go of: handed back (pending again in the store) or taken by
		// another manager; the store has the rest.
		status = t.ending.status()
		if status == "" {
			status = StatusCancelled
		}
	}
	t.record(&info, status)
	return info, true
}

package apcore

import (
	"context"
	"database/sql"
	"log/slog"
	"time"
	"unicode/utf8"
)

// Manager defaults: the first two from the protocol.
const (
	defaultMaxConcurrent = 10
	defaultMaxTasks      = 1000
	defaultLeaseTTL      = 30 * time.Second

	// presizeLimit caps how many records the default store is sized for up
	// front (see WithMaxTasks): about 50 MiB of empty index at the cap.
	// cmd/apcore-bench shows what it buys: at 1,000,000 tasks the cost per
	// task was 1.55-1.62 times the cost at 100,000 with the store sized for
	// 131,072 records, and 1.27-1.37 times sized for the million.
	presizeLimit = 1 << 20
)

// managerConfig collects the Options given to NewTaskManager.
type managerConfig struct {
	maxConcurrent int
	maxTasks      int
	store         TaskStore
	logger        *slog.Logger
	observer      func(TaskInfo)
	leaseTTL      time.Duration
	storeTimeout  time.Duration
	carrier       ContextCarrier
	err           error // the first invalid option
}

// fail records the first invalid option.
func (c *managerConfig) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// Option configures a TaskManager; pass them to NewTaskManager.
type Option func(*managerConfig)

// WithMaxConcurrent bounds how many modules run at once. Default 10; 0 means
// nothing ever starts (every task stays pending), negative is invalid.
func WithMaxConcurrent(n int) Option {
	return func(c *managerConfig) {
		if n < 0 {
			c.fail(invalidf("WithMaxConcurrent(%d): the limit must be 0 or more", n))
		}
		c.maxConcurrent = n
	}
}

// WithMaxTasks bounds how many tasks may be active (pending + running) in the
// store at once; terminal records do not count. Default 1000; 0 refuses
// every submit, negative is invalid.
//
// The default store is sized for that many records up front, up to
// 1,048,576, so that filling it does not stop to grow its index: about 50
// bytes a record, so about 50 MiB for a limit of a million or more. To set
// a high limit without that, pass WithStore(NewMemoryStore()), which starts
// empty and grows.
func WithMaxTasks(n int) Option {
	return func(c *managerConfig) {
		if n < 0 {
			c.fail(invalidf("WithMaxTasks(%d): the limit must be 0 or more", n))
		}
		c.maxTasks = n
	}
}

// WithStore sets where task records live. Default: NewMemoryStore(). A nil
// store is invalid.
func WithStore(s TaskStore) Option {
	return func(c *managerConfig) {
		if s == nil {
			c.fail(invalidf("WithStore(nil): a store is required"))
		}
		c.store = s
	}
}

// WithLogger sets the logger for task failures, panics (with their stack),
// store errors and reaper sweeps. Default: discard everything. nil also
// means discard.
func WithLogger(l *slog.Logger) Option {
	return func(c *managerConfig) { c.logger = l }
}

// WithObserver registers fn to be called with a copy of the record after
// every transition the manager makes (pending at submit, running, pending
// again before a retry or when handed back to the store, and the terminal
// state) and after every progress report (ReportProgress). For each task
// the calls come in order, one at a time; they are made holding no lock of
// the manager's, so fn may call the manager, about the same task too
// (Status, Cancel). fn runs on a goroutine the manager is using (a worker,
// or the caller of Submit or Cancel): a slow fn slows that work, so it
// should return quickly. Default: none.
func WithObserver(fn func(TaskInfo)) Option {
	return func(c *managerConfig) { c.observer = fn }
}

// WithLeaseTTL sets how long this manager's claim on its active tasks lasts
// in a shared store without being renewed (default 30s; it renews every
// third of it). When a manager stops renewing (its process crashed, froze
// or lost the network), any live manager sharing the store recovers its
// tasks within about two TTLs: a resumable task goes back to pending and
// runs again on a live replica; any other ends failed with ErrorCode
// TASK_ABANDONED. A manager whose lease has lapsed can no longer write its
// tasks' records, and stops their modules: as soon as the lease can no
// longer be known to be valid (a fifth of the TTL before it would end,
// counted from the start of the last renewal that got through), even while
// a renewal call is still waiting for a store that does not answer.
// Below 100ms (zero or negative too) is GENERAL_INVALID_INPUT:
// the manager renews every third of the TTL and polls every quarter, so a
// shorter lease would only spend the machine on store calls. It matters
// only with a SharedStore.
func WithLeaseTTL(d time.Duration) Option {
	return func(c *managerConfig) {
		if d < minLeaseTTL {
			c.fail(invalidf("WithLeaseTTL(%v): a lease must last at least %v", d, minLeaseTTL))
		}
		c.leaseTTL = d
	}
}

// WithStoreTimeout bounds each store call the manager makes on its own
// behalf (workers' writes, lease renewal, recovery, claims, sweeps, kept
// outcomes); default 10s; zero or negative is GENERAL_INVALID_INPUT. Calls
// made for a caller (Submit, Status, Wait, Cancel, List, ListPage,
// Shutdown, Drain) are bounded by the caller's context as well, and return
// by its deadline even when the store, a module or an observer does not; a
// write such a call could not wait for goes on, bounded by this timeout,
// and a terminal one that fails is kept and written later. Calls to the
// MemoryStore never block and are not timed.
func WithStoreTimeout(d time.Duration) Option {
	return func(c *managerConfig) {
		if d <= 0 {
			c.fail(invalidf("WithStoreTimeout(%v): the timeout must be more than 0", d))
		}
		c.storeTimeout = d
	}
}

// ContextCarrier carries what a resumable task's context needs from the
// submitter to whichever manager runs it, through the store: typically the
// trace context (apcoreotel provides one). Inject reads it from Submit's
// context into a small map, kept beside the record (StoredTask.Trace);
// Extract puts it back into the context the module runs with.
type ContextCarrier interface {
	Inject(ctx context.Context) map[string]string
	Extract(ctx context.Context, carrier map[string]string) context.Context
}

// WithContextCarrier sets how resumable tasks carry context values (such as
// the trace context) to the manager that runs them. Default: none, and a
// resumable task runs with an empty context. A nil carrier is invalid.
func WithContextCarrier(c ContextCarrier) Option {
	return func(cfg *managerConfig) {
		if isNil(c) {
			cfg.fail(invalidf("WithContextCarrier(nil): a carrier is required"))
		}
		cfg.carrier = c
	}
}

// submitConfig collects the SubmitOptions given to Submit.
type submitConfig struct {
	retry     RetryConfig
	timeout   time.Duration
	resumable bool
	err       error
	runAt     time.Time // WithRunAt, WithDelay; zero for none
	uniqueKey string    // WithUniqueKey
	priority  int       // WithPriority
	tx        *sql.Tx   // WithTx
}

// setErr keeps the first error an option found.
func (c *submitConfig) setErr(err *Error) {
	if c.err == nil {
		c.err = err
	}
}

// WithResumable declares the task safe to run more than once (its module is
// idempotent). Its inputs are kept in the store (they must encode as JSON;
// otherwise Submit fails with GENERAL_INVALID_INPUT and saves nothing), any
// manager sharing the store may run it when it has a free slot, and if the
// manager running it dies it runs again elsewhere: at least once, never
// lost. Without it a task runs only on the manager that accepted it. It
// needs a SharedStore (the default MemoryStore is one); with any other
// store Submit fails with GENERAL_INVALID_INPUT.
//
// A resumable task runs with a context that has none of Submit's values,
// wherever it runs (it may run in another process, so it gets the same
// context here): only what the ContextCarrier (WithContextCarrier) carries,
// such as the trace. Its module gets the inputs as JSON decodes them
// (numbers as float64), wherever it runs. Between attempts it
// waits in the store, not on a timer here, so any manager may take the
// retry.
func WithResumable() SubmitOption {
	return func(c *submitConfig) { c.resumable = true }
}

// SubmitOption configures one task; pass them to Submit.
type SubmitOption func(*submitConfig)

// WithRetry sets the task's retry policy (see RetryConfig). Default: no retry.
func WithRetry(cfg RetryConfig) SubmitOption {
	return func(c *submitConfig) {
		if err := cfg.validate(); err != nil && c.err == nil {
			c.err = err
		}
		c.retry = cfg.withDefaults()
	}
}

// WithTimeout bounds each attempt: when d passes, the attempt's context is
// cancelled and, once the module returns, the attempt fails with
// MODULE_TIMEOUT (and is retried if the policy allows). 0 (the default)
// means no bound; negative is invalid.
func WithTimeout(d time.Duration) SubmitOption {
	return func(c *submitConfig) {
		if d < 0 && c.err == nil {
			c.err = invalidf("WithTimeout(%v): the timeout must be 0 (none) or more", d)
		}
		c.timeout = d
	}
}

// The range of WithPriority.
const (
	MinPriority = -100
	MaxPriority = 100
)

// maxUniqueKey is the longest unique key, in bytes.
const maxUniqueKey = 256

// WithRunAt keeps the task pending, holding no slot and no goroutine, until
// t; a t in the past (or the zero time) runs at once. The record's RunAt
// says when. A scheduled task survives restarts in a durable store when it
// is resumable (WithResumable): any replica runs it at its time, even after
// every replica restarted. Without WithResumable the manager that accepted
// it runs it, from a timer; if that manager ends first, the task ends as
// any of its tasks would (cancelled at Shutdown, TASK_ABANDONED once its
// lease has lapsed). Cancel works before its time as on any pending task.
func WithRunAt(t time.Time) SubmitOption {
	return func(c *submitConfig) {
		if t.IsZero() {
			c.runAt = time.Time{}
			return
		}
		if t.Year() < 1 || t.Year() > 9999 {
			c.setErr(invalidf("WithRunAt(%v): the time must be within years 1-9999", t))
			return
		}
		c.runAt = time.UnixMicro(t.UnixMicro()).UTC()
	}
}

// WithDelay is WithRunAt(time.Now().Add(d)); a negative d is
// GENERAL_INVALID_INPUT, and 0 runs at once.
func WithDelay(d time.Duration) SubmitOption {
	return func(c *submitConfig) {
		if d < 0 {
			c.setErr(invalidf("WithDelay(%v): the delay must be 0 or more", d))
			return
		}
		if d == 0 {
			c.runAt = time.Time{}
			return
		}
		c.runAt = now().Add(d)
	}
}

// WithUniqueKey makes Submit idempotent by key (1-256 bytes of valid
// UTF-8, else GENERAL_INVALID_INPUT): while the store holds a record with
// the same key that is pending, running or completed, Submit saves nothing
// and returns that record's id together with an error e for which
// errors.Is(e, ErrDuplicateTask) (errors.As finds a *DuplicateError in it).
// A failed or cancelled record does not block a new one; a record deleted
// by Cleanup or the reaper no longer blocks either. Exactly one record is
// made however many Submits with the key race, on however many managers
// sharing the store: the store checks the key and inserts in one atomic
// step, by an index. It needs a SharedStore (the default MemoryStore, and
// sqlstore and redisstore, are); with any other store Submit fails with
// GENERAL_INVALID_INPUT.
func WithUniqueKey(key string) SubmitOption {
	return func(c *submitConfig) {
		switch {
		case key == "" || len(key) > maxUniqueKey:
			c.setErr(invalidf("WithUniqueKey: the key must be 1-%d bytes, not %d", maxUniqueKey, len(key)))
		case !utf8.ValidString(key):
			c.setErr(invalidf("WithUniqueKey: the key is not valid UTF-8"))
		}
		c.uniqueKey = key
	}
}

// WithPriority orders tasks that are ready at the same time: higher first
// (default 0; MinPriority to MaxPriority, -100 to 100, else
// GENERAL_INVALID_INPUT); equal priorities in submit order. It applies to
// this manager's queue of tasks waiting for a slot, and to the order in
// which any manager claims resumable tasks from a shared store. A running
// task is never stopped for a higher one.
func WithPriority(p int) SubmitOption {
	return func(c *submitConfig) {
		if p < MinPriority || p > MaxPriority {
			c.setErr(invalidf("WithPriority(%d): the priority must be within %d-%d", p, MinPriority, MaxPriority))
		}
		c.priority = p
	}
}

// WithTx inserts the task in tx, a transaction of the database the store
// keeps its records in: the task exists, and any manager sharing the store
// may run it, only once tx commits; if tx rolls back nothing is left.
// Such a task is resumable (its inputs must encode as JSON), and combines
// with every other SubmitOption. Submit makes no other store call, and
// the manager keeps no handle on the task: any manager claims it after
// the commit (this one first when it has a free slot; see TxInserter).
// A store that cannot insert in a *sql.Tx of its own database (one that
// is not a TxInserter, or tx of another database) refuses it with
// GENERAL_INVALID_INPUT, saving nothing; a nil tx is GENERAL_INVALID_INPUT.
func WithTx(tx *sql.Tx) SubmitOption {
	return func(c *submitConfig) {
		if tx == nil {
			c.setErr(invalidf("WithTx: the transaction is nil"))
		}
		c.tx = tx
	}
}

package apcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"
)

// SharedStore is the optional TaskStore capability that lets several
// managers (replicas of a service) share one store as one task manager.
// MemoryStore, sqlstore and redisstore implement it; storetest.TestStore
// checks it. With it the manager:
//
//   - admits a task with one atomic Insert, so WithMaxTasks bounds the
//     active records in the store exactly, however many managers submit;
//   - holds a lease (Renew) while it lives, and writes its tasks' records
//     only while it holds them (Update), so that once its lease has lapsed
//     and another manager has recovered its tasks (Recover), its late writes
//     are refused: fencing;
//   - learns, by asking which of its running tasks it no longer holds
//     (Lost), that another manager cancelled one, and stops the module;
//   - keeps resumable tasks (WithResumable) with their inputs, so that any
//     manager may Claim and run them;
//   - on Shutdown, cancels what no live manager holds (Orphans).
//
// A store without it keeps working as a single manager's store: admission
// counts and then saves under the manager's own lock (exact only within one
// manager), a dead manager's tasks stay active until FailStale ends them, a
// cancel through another manager is recorded but does not stop the module,
// WithResumable is refused, and Shutdown cancels only its own tasks.
//
// Every method must be atomic with respect to the others, across processes.
//
// Implement it against package storetest, whose TestStore checks every rule
// below (each as a subtest of storetest.Run); the interface may gain methods
// in later versions, and storetest will check them.
type SharedStore interface {
	TaskStore
	ConditionalSaver

	// Insert saves a new record (with what is kept beside it) only while
	// fewer than limit records are active (pending or running), atomically
	// with that count; it reports false, saving nothing, at the limit.
	//
	// When task.Info.UniqueKey is set and the store holds a record with
	// that key that is pending, running or completed, Insert saves nothing
	// and returns false with a *DuplicateError naming that record (a failed
	// or cancelled record, or a deleted one, does not hold its key). The
	// check and the insert are one atomic step, across processes, and the
	// check is one indexed lookup whatever the number of records.
	Insert(ctx context.Context, task StoredTask, limit int) (bool, error)
	// Update writes task.Info, task.Owner and task.NotBefore only if the
	// stored record is active and held by holder; it reports whether it
	// wrote. The inputs and options kept beside the record never change
	// after Insert.
	Update(ctx context.Context, task StoredTask, holder string) (bool, error)
	// Claim hands req.Owner up to req.Limit resumable records that are
	// pending, held by no one, due (NotBefore not after req.Now) and, when
	// req.Modules is not nil, of one of those modules: higher
	// Info.Priority first, and among equal priorities oldest first (in the
	// order they were inserted), by an index rather than a sort of what
	// waits. Each
	// becomes running and held by req.Owner (StartedAt set to req.Now if
	// unset), and is returned as it now stands. An owner without a live
	// lease (none, or one that ended before req.Now) claims nothing: a
	// manager whose lease Recover took must not take tasks under that id
	// again, or a late write of its old attempt would pass for the new one's.
	Claim(ctx context.Context, req ClaimRequest) ([]StoredTask, error)
	// Renew sets req.Owner's lease to end at req.Expires. With req.Create it
	// makes the lease; without, it reports false when the owner has no lease
	// any more (Recover took it, or Release ended it).
	Renew(ctx context.Context, req LeaseRequest) (bool, error)
	// Release ends owner's lease.
	Release(ctx context.Context, owner string) error
	// Recover ends the leases that ended before now and what their owners
	// held, and what is held by an owner with no lease: each active record
	// becomes pending and held by no one if it is resumable (RetryCount and
	// NotBefore unchanged), and failed with ErrorCode TASK_ABANDONED
	// otherwise. It returns how many records it changed.
	Recover(ctx context.Context, now time.Time) (int, error)
	// Lost returns the ids among ids whose record owner no longer holds
	// while it is active: ended (by a cancel elsewhere), gone, or held by
	// another manager.
	Lost(ctx context.Context, owner string, ids []string) ([]string, error)
	// Orphans returns the active records that no live manager holds: held
	// by an owner whose lease ended before q.Now (or who has none), or held
	// by no one while no lease but q.Self's is live. q.Self's own are never
	// orphans; q.Self is "" for a manager that has ended its lease. A
	// record held by no one whose NotBefore is after q.Now (a resumable
	// task due later, or waiting out a retry's backoff) is not an orphan:
	// it waits in the store for whichever manager runs when it is due.
	Orphans(ctx context.Context, q OrphanQuery) ([]TaskInfo, error)
}

// ClaimRequest is what SharedStore.Claim is asked for.
type ClaimRequest struct {
	// Owner is the claiming manager's lease id; it must be live at Now.
	Owner string
	// Limit is the most records to claim (the manager's free slots).
	Limit int
	// Now is the manager's clock: records due by it may be claimed.
	Now time.Time
	// Modules, when not nil, restricts the claim to tasks of these module
	// ids: the modules the claiming manager can run (an empty, non-nil
	// slice claims nothing). nil claims tasks of any module.
	Modules []string
}

// LeaseRequest is what SharedStore.Renew is asked for.
type LeaseRequest struct {
	// Owner is the manager's lease id.
	Owner string
	// Expires is when the lease ends unless it is renewed again.
	Expires time.Time
	// Create makes the lease when the owner has none; without it a lease
	// that is gone is reported, not made again.
	Create bool
}

// OrphanQuery is what SharedStore.Orphans is asked for.
type OrphanQuery struct {
	// Self is the asking manager's lease id, whose records are never
	// orphans; "" for a manager that has ended its lease.
	Self string
	// Now is the asking manager's clock: leases that ended before it are
	// dead.
	Now time.Time
}

// TxInserter is the optional SharedStore capability behind WithTx: Insert
// made in the caller's transaction of the store's own database. sqlstore
// implements it.
type TxInserter interface {
	// InsertTx is Insert made in tx: the record (held by no one, resumable)
	// exists for others only once tx commits, and not at all if it rolls
	// back. A tx of another database is refused with GENERAL_INVALID_INPUT,
	// leaving tx as it was.
	InsertTx(ctx context.Context, tx *sql.Tx, task StoredTask, limit int) (bool, error)
}

// StoredTask is a record as a SharedStore keeps it: the TaskInfo and what
// replicas need beside it.
type StoredTask struct {
	// Info is the record.
	Info TaskInfo
	// Owner is the id of the manager that holds the task, "" for none: a
	// resumable task waiting for any manager to claim it.
	Owner string
	// Resumable is set for a task submitted WithResumable.
	Resumable bool
	// Inputs are a resumable task's inputs, as JSON; nil otherwise.
	Inputs json.RawMessage
	// Retry is the task's retry policy (Retry.MaxRetries is
	// Info.MaxRetries).
	Retry RetryConfig
	// Timeout is the task's per-attempt timeout, 0 for none.
	Timeout time.Duration
	// NotBefore is when a pending resumable task may be claimed: its
	// Info.RunAt when it was submitted WithRunAt, and after a failed
	// attempt, the end of its retry backoff.
	NotBefore time.Time
	// Trace carries the submitter's trace context (see apcoreotel), or is
	// nil.
	Trace map[string]string
}

// JSONStore is an optional TaskStore capability: the store keeps results as
// JSON, so a result reads back in its JSON-decoded form (objects as
// map[string]any, numbers as float64). The manager then encodes each result
// before the completed write and keeps the decoded form, so that Wait,
// Status, Result, List and the observers agree on the value and its Go
// types whatever the timing; a result that does not encode (NaN, a channel,
// a cycle) fails the task with GENERAL_INVALID_INPUT.
type JSONStore interface {
	// KeepsJSON reports whether results come back JSON-decoded.
	KeepsJSON() bool
}

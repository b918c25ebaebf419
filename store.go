package apcore

import (
	"context"
	"time"
)

// TaskStore keeps task records. The manager writes every transition through
// it and reads Status, Result, List and the reaper's sweeps from it, so a
// shared store lets several managers see one another's tasks.
//
// Implementations must be safe for concurrent use and must hand out copies:
// a record returned by Get, List or ListExpired must not change when the
// store does, and changing it must not change the store. Every method may do
// I/O; a store whose backend cannot be reached returns an error that matches
// ErrStoreUnavailable. Use package storetest to check an implementation.
//
// Optional capabilities are found by type assertion; a store without them
// still works, with less:
//
//   - Counter: admission and TaskCount count without listing (else by List);
//   - ConditionalSaver: transitions never overwrite a terminal record (else
//     plain Save);
//   - Remover: Cleanup and Reap count what they deleted exactly across
//     replicas;
//   - SharedStore: several managers share the store as one (leases,
//     resumable tasks, remote cancel, exact admission across replicas);
//   - JSONStore: the store keeps results as JSON, and the manager makes
//     every reader see the decoded form;
//   - Pager: ListPage costs a page (else the manager lists every record
//     and cuts the page out);
//   - Sweeper: Reap and Cleanup delete a batch per store call (else they
//     list what expired and delete one record at a time);
//   - TxInserter: Submit WithTx inserts in the caller's *sql.Tx (else
//     WithTx is refused);
//   - Notifier: the store wakes idle managers when claimable work appears
//     elsewhere (else they find it at their next poll).
//
// MemoryStore has them all but JSONStore, TxInserter and Notifier;
// redisstore has all but TxInserter and Notifier; sqlstore has all (its
// Notifier is silent on SQLite).
type TaskStore interface {
	// Save creates or overwrites the record with task.TaskID. An overwrite
	// keeps the record's place in the insertion order.
	Save(ctx context.Context, task TaskInfo) error
	// Get returns the record, or an error matching ErrTaskNotFound.
	Get(ctx context.Context, taskID string) (TaskInfo, error)
	// List returns every record ("" status) or those in one state, in
	// insertion order. It is the unpaged listing kept for compatibility:
	// its answer grows with the store; the manager's own sweeps and the
	// dashboard use Pager and Sweeper where the store has them.
	List(ctx context.Context, status TaskStatus) ([]TaskInfo, error)
	// Delete removes the record; an absent id is not an error.
	Delete(ctx context.Context, taskID string) error
	// ListExpired returns the terminal records whose CompletedAt is set and
	// strictly before before. It never returns a pending or running record.
	ListExpired(ctx context.Context, before time.Time) ([]TaskInfo, error)
	// Name identifies the store's type for tooling, e.g. "InMemoryTaskStore".
	Name() string
}

// Counter is an optional TaskStore capability: count records in any of the
// given states (none = all) without listing them. The manager uses it for
// admission and TaskCount when present.
type Counter interface {
	Count(ctx context.Context, statuses ...TaskStatus) (int, error)
}

// ConditionalSaver is an optional TaskStore capability: save task only if
// the stored record's status is one of from, atomically; report whether it
// saved. An absent record is not saved (false, nil). The manager makes every
// state transition through it when present, so a cancel written by anyone
// (another goroutine, another replica) is never overwritten by a late
// completed or failed write.
type ConditionalSaver interface {
	SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error)
}

// Remover is an optional TaskStore capability: delete the record and report
// whether this call deleted it (false, nil for an absent id). Cleanup and
// Reap count what they deleted with it, so that replicas sweeping at once
// never count one record twice; without it they count every Delete that
// did not fail.
type Remover interface {
	Remove(ctx context.Context, taskID string) (bool, error)
}

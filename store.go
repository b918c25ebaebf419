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
// Optional capabilities (Counter, ConditionalSaver) are found by type
// assertion; a store without them still works, with admission counting by
// List and transitions made by plain Save.
type TaskStore interface {
	// Save creates or overwrites the record with task.TaskID. An overwrite
	// keeps the record's place in the insertion order.
	Save(ctx context.Context, task TaskInfo) error
	// Get returns the record, or an error matching ErrTaskNotFound.
	Get(ctx context.Context, taskID string) (TaskInfo, error)
	// List returns every record ("" status) or those in one state, in
	// insertion order.
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

// activeStatuses are the states that count against max_tasks and that a
// transition may start from.
var activeStatuses = []TaskStatus{StatusPending, StatusRunning}

// CloneResult returns a deep copy of a JSON-shaped value: maps with string
// keys and slices are copied recursively, everything else (strings, numbers,
// booleans, nil, and types this function does not know) is returned as it
// is. Stores use it so that a result handed to or from a caller cannot alias
// the stored one.
func CloneResult(v any) any {
	switch v.(type) {
	case map[string]any, []any, map[string]string, []string, []byte:
		return cloneDeep(v) // apart, so that the common case keeps a small frame
	}
	return v
}

// cloneDeep copies the container types CloneResult knows, recursively.
func cloneDeep(v any) any {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = CloneResult(e)
		}
		return out
	case []any:
		if x == nil {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = CloneResult(e)
		}
		return out
	case map[string]string:
		if x == nil {
			return x
		}
		out := make(map[string]string, len(x))
		for k, e := range x {
			out[k] = e
		}
		return out
	case []string:
		if x == nil {
			return x
		}
		return append([]string(nil), x...)
	case []byte:
		if x == nil {
			return x
		}
		return append([]byte(nil), x...)
	}
	return v
}

// clone returns t with its result deep-copied.
func (t TaskInfo) clone() TaskInfo {
	t.Result = CloneResult(t.Result)
	return t
}

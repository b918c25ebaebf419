package apcore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"time"
)

// TaskStatus is the state of a task: one of the five Status constants.
//
//	submit ──> pending ──> running ──> completed
//	             ^  │         │ │
//	     backoff └──┼─────────┘ └────> failed
//	                └──── cancel ────> cancelled (from pending or running)
type TaskStatus string

// The five task states.
const (
	// StatusPending: submitted and waiting for a concurrency slot, or waiting
	// out a retry backoff (then RetryCount > 0). Left for running or
	// cancelled.
	StatusPending TaskStatus = "pending"
	// StatusRunning: the module is executing. Left for completed, failed,
	// cancelled, or pending when a failed attempt will be retried.
	StatusRunning TaskStatus = "running"
	// StatusCompleted: the module returned without error; Result holds its
	// output. Terminal.
	StatusCompleted TaskStatus = "completed"
	// StatusFailed: the last attempt failed (an error, a panic, a timeout)
	// and no retry is left; Error holds the message and ErrorCode its code.
	// Terminal.
	StatusFailed TaskStatus = "failed"
	// StatusCancelled: cancelled before or during execution; any output was
	// discarded. Terminal.
	StatusCancelled TaskStatus = "cancelled"
)

// allStatuses lists the five states.
var allStatuses = []TaskStatus{StatusPending, StatusRunning, StatusCompleted, StatusFailed, StatusCancelled}

// activeStatuses are the states that count against max_tasks and that a
// transition may start from.
var activeStatuses = []TaskStatus{StatusPending, StatusRunning}

// Valid reports whether s is one of the five states. Every store, and the
// wire decoder, refuses a record whose status is not.
func (s TaskStatus) Valid() bool { return s.IsActive() || s.IsTerminal() }

// IsTerminal reports whether s is completed, failed or cancelled.
func (s TaskStatus) IsTerminal() bool {
	return s == StatusCompleted || s == StatusFailed || s == StatusCancelled
}

// IsActive reports whether s is pending or running.
func (s TaskStatus) IsActive() bool { return s == StatusPending || s == StatusRunning }

// TaskInfo is one task's record. Zero times mean "not yet".
// It marshals to and from the protocol's JSON wire format (snake_case
// names, times as float Unix seconds, null for unset; see MarshalJSON).
type TaskInfo struct {
	// TaskID is the UUID v4 that Submit returned.
	TaskID string
	// ModuleID is the module the task runs.
	ModuleID string
	// Status is the task's state.
	Status TaskStatus
	// SubmittedAt is when Submit saved the record.
	SubmittedAt time.Time
	// StartedAt is when the first attempt started; kept across retries.
	StartedAt time.Time
	// CompletedAt is when the task became terminal.
	CompletedAt time.Time
	// Result is the module's output; set on completed tasks only.
	Result any
	// Error is the failure's message; set on failed tasks only.
	Error string
	// RetryCount is how many retries have been taken.
	RetryCount int
	// MaxRetries is the task's retry budget.
	MaxRetries int

	// ErrorCode is the machine-readable code of a failed task's error:
	// MODULE_TIMEOUT, MODULE_EXECUTE_ERROR (a panic, or a module error that
	// carries no code), MODULE_NOT_FOUND, GENERAL_INVALID_INPUT (malformed
	// module id, or a result the store cannot encode), TASK_ABANDONED, or the
	// Code of an *apcore.Error the module returned. Empty unless failed.
	ErrorCode ErrorCode
	// Progress is the last progress the module reported, 0-100 (0 = none).
	Progress float64
	// ProgressMessage is the message reported with it.
	ProgressMessage string

	// RunAt is when a task submitted WithRunAt (or WithDelay) may start;
	// nil for a task that may start at once. A pending task whose RunAt is
	// in the future is scheduled: it holds no slot until then.
	RunAt *time.Time
	// UniqueKey is the key the task was submitted with (WithUniqueKey), or
	// "".
	UniqueKey string
	// Priority orders tasks ready at the same time, higher first
	// (WithPriority); 0 by default.
	Priority int
}

// clone returns t with its result deep-copied (see CloneResult).
func (t TaskInfo) clone() TaskInfo {
	t.Result = CloneResult(t.Result)
	if t.RunAt != nil {
		at := *t.RunAt
		t.RunAt = &at
	}
	return t
}

// checkRecord rejects what no store should keep: an empty id or a status
// that is not one of the five. Every store the package ships calls it.
func checkRecord(task *TaskInfo) error {
	if task.TaskID == "" {
		return invalidf("task store: the record has an empty task id")
	}
	if !task.Status.Valid() {
		return invalidf("task store: record %s has unknown status %q", task.TaskID, task.Status)
	}
	return nil
}

// now is the current time, to the microsecond (the wire format's precision)
// and in UTC, so a record reads the same from every store.
func now() time.Time { return time.UnixMicro(time.Now().UnixMicro()).UTC() }

// ---- the wire format ----------------------------------------------------

// wireTask is TaskInfo's JSON shape, field for field in the protocol's
// order, then the second-stage fields, written only when set.
type wireTask struct {
	TaskID          string     `json:"task_id"`
	ModuleID        string     `json:"module_id"`
	Status          TaskStatus `json:"status"`
	SubmittedAt     float64    `json:"submitted_at"`
	StartedAt       *float64   `json:"started_at"`
	CompletedAt     *float64   `json:"completed_at"`
	Result          any        `json:"result"`
	Error           *string    `json:"error"`
	RetryCount      int        `json:"retry_count"`
	MaxRetries      int        `json:"max_retries"`
	ErrorCode       ErrorCode  `json:"error_code,omitempty"`
	Progress        float64    `json:"progress,omitempty"`
	ProgressMessage string     `json:"progress_message,omitempty"`
	RunAt           *float64   `json:"run_at,omitempty"`
	UniqueKey       string     `json:"unique_key,omitempty"`
	Priority        int        `json:"priority,omitempty"`
}

// wireTaskIn is what UnmarshalJSON reads; pointers tell a missing field
// from a zero one, and the result is kept raw to decode it on its own.
type wireTaskIn struct {
	TaskID          *string         `json:"task_id"`
	ModuleID        *string         `json:"module_id"`
	Status          *TaskStatus     `json:"status"`
	SubmittedAt     *float64        `json:"submitted_at"`
	StartedAt       *float64        `json:"started_at"`
	CompletedAt     *float64        `json:"completed_at"`
	Result          json.RawMessage `json:"result"`
	Error           *string         `json:"error"`
	RetryCount      *int            `json:"retry_count"`
	MaxRetries      *int            `json:"max_retries"`
	ErrorCode       ErrorCode       `json:"error_code"`
	Progress        float64         `json:"progress"`
	ProgressMessage string          `json:"progress_message"`
	RunAt           *float64        `json:"run_at"`
	UniqueKey       string          `json:"unique_key"`
	Priority        int             `json:"priority"`
}

// The wire format keeps times to the microsecond, and accepts years 1-9999.
const (
	minUnixSeconds = -62135596800 // 0001-01-01T00:00:00Z
	maxUnixSeconds = 253402300799 // 9999-12-31T23:59:59Z
)

// unixSeconds is t as float Unix seconds, to the microsecond. The zero time
// is 0.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMicro()) / 1e6
}

// optSeconds is t as a nullable wire time: nil for the zero time.
func optSeconds(t time.Time) *float64 {
	if t.IsZero() {
		return nil
	}
	f := unixSeconds(t)
	return &f
}

// fromSeconds converts wire seconds to a UTC time rounded to the microsecond.
func fromSeconds(field string, f float64) (time.Time, error) {
	if math.IsNaN(f) || f < minUnixSeconds || f > maxUnixSeconds {
		return time.Time{}, fmt.Errorf("%s: %v is not a Unix time in years 1-9999", field, f)
	}
	return time.UnixMicro(int64(math.Round(f * 1e6))).UTC(), nil
}

// MarshalJSON encodes the record in the protocol's wire format: snake_case
// names, times as float Unix seconds (microsecond precision), null for an
// unset started_at, completed_at, result or error. error_code, progress and
// progress_message, and the third stage's run_at, unique_key and priority
// are written only when set, so a record without them encodes exactly as
// the protocol's fixtures do.
func (t TaskInfo) MarshalJSON() ([]byte, error) {
	w := wireTask{
		TaskID:          t.TaskID,
		ModuleID:        t.ModuleID,
		Status:          t.Status,
		SubmittedAt:     unixSeconds(t.SubmittedAt),
		StartedAt:       optSeconds(t.StartedAt),
		CompletedAt:     optSeconds(t.CompletedAt),
		Result:          t.Result,
		RetryCount:      t.RetryCount,
		MaxRetries:      t.MaxRetries,
		ErrorCode:       t.ErrorCode,
		Progress:        t.Progress,
		ProgressMessage: t.ProgressMessage,
		UniqueKey:       t.UniqueKey,
		Priority:        t.Priority,
	}
	if t.Error != "" {
		w.Error = &t.Error
	}
	if t.RunAt != nil {
		w.RunAt = optSeconds(*t.RunAt)
	}
	return json.Marshal(w)
}

// UnmarshalJSON decodes a record in the protocol's wire format. task_id,
// module_id, status and submitted_at are required; status must be one of the
// five states; times must be Unix seconds in years 1-9999; counts must not be
// negative; progress must be within 0-100. Unknown fields are ignored. A
// result decodes as encoding/json decodes into an any (objects to
// map[string]any, numbers to float64). Errors are GENERAL_INVALID_INPUT and
// wrap the JSON decoder's error when there is one. On error t is left
// unchanged.
func (t *TaskInfo) UnmarshalJSON(data []byte) error {
	var w wireTaskIn
	if err := json.Unmarshal(data, &w); err != nil {
		return &Error{Code: CodeInvalidInput, Message: "task record: not valid JSON for a record", Cause: err}
	}
	bad := func(format string, args ...any) error {
		return invalidf("task record: "+format, args...)
	}
	switch {
	case w.TaskID == nil:
		return bad("task_id is missing")
	case w.ModuleID == nil:
		return bad("module_id is missing")
	case w.Status == nil:
		return bad("status is missing")
	case !w.Status.Valid():
		return bad("status %q is not one of pending, running, completed, failed, cancelled", *w.Status)
	case w.SubmittedAt == nil:
		return bad("submitted_at is missing")
	case w.RetryCount != nil && *w.RetryCount < 0:
		return bad("retry_count is negative")
	case w.MaxRetries != nil && *w.MaxRetries < 0:
		return bad("max_retries is negative")
	case !(w.Progress >= 0 && w.Progress <= 100):
		return bad("progress %v is not within 0-100", w.Progress)
	case w.Priority < MinPriority || w.Priority > MaxPriority:
		return bad("priority %d is not within %d-%d", w.Priority, MinPriority, MaxPriority)
	case len(w.UniqueKey) > maxUniqueKey:
		return bad("unique_key is longer than %d bytes", maxUniqueKey)
	}
	out := TaskInfo{
		TaskID: *w.TaskID, ModuleID: *w.ModuleID, Status: *w.Status,
		ErrorCode: w.ErrorCode, Progress: w.Progress, ProgressMessage: w.ProgressMessage,
		UniqueKey: w.UniqueKey, Priority: w.Priority,
	}
	var err error
	if out.SubmittedAt, err = fromSeconds("submitted_at", *w.SubmittedAt); err != nil {
		return bad("%v", err)
	}
	if *w.SubmittedAt == 0 {
		out.SubmittedAt = time.Time{}
	}
	if w.StartedAt != nil {
		if out.StartedAt, err = fromSeconds("started_at", *w.StartedAt); err != nil {
			return bad("%v", err)
		}
	}
	if w.CompletedAt != nil {
		if out.CompletedAt, err = fromSeconds("completed_at", *w.CompletedAt); err != nil {
			return bad("%v", err)
		}
	}
	if w.RunAt != nil {
		at, err := fromSeconds("run_at", *w.RunAt)
		if err != nil {
			return bad("%v", err)
		}
		out.RunAt = &at
	}
	if len(w.Result) > 0 && !bytes.Equal(w.Result, []byte("null")) {
		if err := json.Unmarshal(w.Result, &out.Result); err != nil {
			return &Error{Code: CodeInvalidInput, Message: "task record: result", Cause: err}
		}
	}
	if w.Error != nil {
		out.Error = *w.Error
	}
	if w.RetryCount != nil {
		out.RetryCount = *w.RetryCount
	}
	if w.MaxRetries != nil {
		out.MaxRetries = *w.MaxRetries
	}
	*t = out
	return nil
}

// ---- copies of results --------------------------------------------------

// CloneResult returns a deep copy of a JSON-shaped value: maps with string
// keys and slices are copied recursively, everything else (strings, numbers,
// booleans, nil, and types this function does not know) is returned as it
// is. Stores use it so that a result handed to or from a caller cannot alias
// the stored one. A value that holds itself, or is nested more than 10,000
// levels deep, is returned as it is (the manager refuses such a result
// before it reaches a store: the task fails with GENERAL_INVALID_INPUT).
func CloneResult(v any) any {
	out, err := cloneResult(v, 0)
	if err != nil {
		return v
	}
	return out
}

// maxResultDepth bounds how deeply a result may nest. It is far beyond any
// real result, and far below what would overflow a goroutine's stack.
const maxResultDepth = 10_000

// errResultTooDeep is what cloneResult reports for a cyclic or too deep value.
var errResultTooDeep = fmt.Errorf("the result holds itself or is nested more than %d levels deep", maxResultDepth)

// cloneResult is CloneResult with a depth bound, which also catches cycles.
func cloneResult(v any, depth int) (any, error) {
	switch x := v.(type) {
	case map[string]any:
		if x == nil {
			return x, nil
		}
		if depth >= maxResultDepth {
			return nil, errResultTooDeep
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := cloneResult(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case []any:
		if x == nil {
			return x, nil
		}
		if depth >= maxResultDepth {
			return nil, errResultTooDeep
		}
		out := make([]any, len(x))
		for i, e := range x {
			c, err := cloneResult(e, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]string:
		if x == nil {
			return x, nil
		}
		out := make(map[string]string, len(x))
		for k, e := range x {
			out[k] = e
		}
		return out, nil
	case []string:
		return slices.Clone(x), nil
	case []byte:
		return slices.Clone(x), nil
	}
	return v, nil
}

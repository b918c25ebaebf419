package apcore

import (
	"errors"
	"fmt"
)

// ErrorCode is the protocol's machine-readable error code. The codes are
// shared with the other apcore SDKs, so a service can match on them across
// languages.
type ErrorCode string

// The protocol's error codes. Each says when this package produces it;
// two are defined only so that a service can match codes from other SDKs.
const (
	// CodeTaskLimitExceeded: Submit found max_tasks active tasks already.
	CodeTaskLimitExceeded ErrorCode = "TASK_LIMIT_EXCEEDED"
	// CodeTaskNotFound: no record has the given task id.
	CodeTaskNotFound ErrorCode = "TASK_NOT_FOUND"
	// CodeTaskNotCompleted: Result was asked of a task that is not completed.
	CodeTaskNotCompleted ErrorCode = "TASK_NOT_COMPLETED"
	// CodeTaskManagerClosed: the manager has been shut down.
	CodeTaskManagerClosed ErrorCode = "TASK_MANAGER_CLOSED"
	// CodeReaperAlreadyRunning: StartReaper was called while a reaper runs.
	CodeReaperAlreadyRunning ErrorCode = "REAPER_ALREADY_RUNNING"
	// CodeTaskStoreUnavailable: the task store failed or could not be reached.
	CodeTaskStoreUnavailable ErrorCode = "TASK_STORE_UNAVAILABLE"
	// CodeModuleNotFound: the executor does not know the module id.
	CodeModuleNotFound ErrorCode = "MODULE_NOT_FOUND"
	// CodeModuleExecuteError: the module failed (returned an error or panicked).
	CodeModuleExecuteError ErrorCode = "MODULE_EXECUTE_ERROR"
	// CodeModuleTimeout: an attempt ran past the WithTimeout bound.
	CodeModuleTimeout ErrorCode = "MODULE_TIMEOUT"
	// CodeTaskAbandoned: the task's manager stopped (its process crashed,
	// froze or lost the store) before the task ended; the ErrorCode of a
	// record that FailStale, or lease recovery, failed.
	CodeTaskAbandoned ErrorCode = "TASK_ABANDONED"
	// CodeExecutionCancelled: a protocol code for a cancelled execution.
	// This package never returns it: a cancelled task ends with status
	// cancelled and no error, and Cancel itself reports a bool.
	CodeExecutionCancelled ErrorCode = "EXECUTION_CANCELLED"
	// CodeInvalidInput: an argument or option was out of range or malformed.
	CodeInvalidInput ErrorCode = "GENERAL_INVALID_INPUT"
	// CodeInternalError: a protocol code for a broken invariant inside an
	// SDK. This package defines it for matching but never returns it.
	CodeInternalError ErrorCode = "GENERAL_INTERNAL_ERROR"
	// CodeTaskDuplicate: a Submit WithUniqueKey found a pending, running or
	// completed record with its key (see ErrDuplicateTask).
	CodeTaskDuplicate ErrorCode = "TASK_DUPLICATE"
)

// Error is the library's typed error. errors.Is(err, ErrX) matches by Code,
// so a wrapped or differently-worded *Error with the same code still matches.
type Error struct {
	// Code is the protocol error code.
	Code ErrorCode
	// Message is a human-readable sentence; it may be empty on sentinels.
	Message string
	// Cause is the underlying error, if any; Unwrap returns it.
	Cause error
}

// Error returns the message, followed by the cause when there is one. An
// Error without a message (a sentinel) reads as its code.
func (e *Error) Error() string {
	if e == nil {
		return "<nil *apcore.Error>"
	}
	msg := e.Message
	if msg == "" {
		msg = string(e.Code)
	}
	if e.Cause != nil {
		return msg + ": " + e.Cause.Error()
	}
	return msg
}

// Unwrap returns the cause, so errors.Is and errors.As see through an Error
// to, for example, a database driver's error.
func (e *Error) Unwrap() error {
	if e == nil {
		return nil
	}
	return e.Cause
}

// Is reports whether target is an *Error with the same code.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && e != nil && t != nil && t.Code == e.Code
}

// Sentinels to match with errors.Is. They match any *Error with their code,
// whatever its message or cause.
var (
	ErrTaskLimitExceeded    = &Error{Code: CodeTaskLimitExceeded}
	ErrTaskNotFound         = &Error{Code: CodeTaskNotFound}
	ErrTaskNotCompleted     = &Error{Code: CodeTaskNotCompleted}
	ErrManagerClosed        = &Error{Code: CodeTaskManagerClosed}
	ErrReaperAlreadyRunning = &Error{Code: CodeReaperAlreadyRunning}
	ErrStoreUnavailable     = &Error{Code: CodeTaskStoreUnavailable}
	ErrModuleNotFound       = &Error{Code: CodeModuleNotFound}
	ErrInvalidInput         = &Error{Code: CodeInvalidInput}
	// ErrDuplicateTask matches Submit's error for a unique key that a
	// record holds already (WithUniqueKey); Submit returns that record's id
	// with it.
	ErrDuplicateTask = &Error{Code: CodeTaskDuplicate}
)

// DuplicateError says which record holds a unique key: the error a
// SharedStore's Insert returns (with false) when a pending, running or
// completed record has the key of the task it was asked to insert. It
// matches ErrDuplicateTask with errors.Is.
type DuplicateError struct {
	// TaskID is the id of the record that holds the key.
	TaskID string
	// Key is the unique key.
	Key string
}

// Error says which task holds the key.
func (e *DuplicateError) Error() string {
	return fmt.Sprintf("task %s holds unique key %q", e.TaskID, e.Key)
}

// Is reports whether target is ErrDuplicateTask (an *Error with code
// TASK_DUPLICATE).
func (e *DuplicateError) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t != nil && t.Code == CodeTaskDuplicate
}

// CodeOf returns the code of the first *Error in err's chain, or "" if there
// is none.
func CodeOf(err error) ErrorCode {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// newError builds an *Error with a formatted message.
func newError(code ErrorCode, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// invalidf builds a GENERAL_INVALID_INPUT error.
func invalidf(format string, args ...any) *Error {
	return newError(CodeInvalidInput, format, args...)
}

// storeErr reports a failed store call. A store that already returned a typed
// *Error keeps its code (and, for TASK_STORE_UNAVAILABLE, gets op in front
// of its message, so that the error names what the caller asked for); any other error is wrapped as TASK_STORE_UNAVAILABLE
// so callers can match it with errors.Is(err, ErrStoreUnavailable) and still
// reach the driver's error through Unwrap.
func storeErr(op string, err error) error {
	switch CodeOf(err) {
	case "":
	case CodeTaskStoreUnavailable:
		// The store's own message names its step ("renew lease"); say
		// which of the caller's operations it was for.
		return &Error{Code: CodeTaskStoreUnavailable, Message: "task store: " + op, Cause: err}
	default:
		return err
	}
	return &Error{Code: CodeTaskStoreUnavailable, Message: "task store: " + op, Cause: err}
}

// taskNotFound is the protocol's "Task not found: <id>" error.
func taskNotFound(taskID string) error {
	return newError(CodeTaskNotFound, "Task not found: %s", taskID)
}

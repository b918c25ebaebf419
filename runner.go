package apcore

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
)

// This file is what a worker does: it takes a queued task, starts it,
// calls its module and settles the attempt (see lifecycle.go for the
// transitions), then takes the next queued task.

// work runs one attempt of t, from start to settle, then of every task it
// takes from the queue, on one goroutine holding one slot.
func (m *TaskManager) work(w *worker, t *task) {
	defer m.wg.Done()
	if w == nil {
		w = newWorker()
		m.sched.join(w)
	}
	for t != nil {
		if ctx, inputs, ok := m.start(t); ok {
			w.current.Store(t)
			t.worker = w
			result, err := m.call(ctx, t, inputs)
			w.current.Store(nil)
			m.settle(ctx, t, result, err)
		}
		next, idle := m.sched.next(w, true)
		if idle {
			if m.shared != nil && m.mayClaim.Load() {
				m.wakeClaimer() // a slot is free: claim a resumable task for it
			}
			next = w.await() // nil: retired, or the manager shuts down
		}
		t = next
	}
}

// call runs the module. A malformed or unknown module id fails at once,
// for good (the protocol's newest text: Submit accepts it, the task fails).
// A panic becomes the attempt's error. A module that calls runtime.Goexit
// (as testing's FailNow does) ends this worker's goroutine; goexited
// settles the attempt and hands the slot on before it goes.
func (m *TaskManager) call(ctx context.Context, t *task, inputs map[string]any) (result any, err error) {
	if err := ValidateModuleID(t.moduleID); err != nil {
		return nil, Permanent(err)
	}
	if m.resolver != nil && !m.resolver.HasModule(t.moduleID) {
		return nil, Permanent(newError(CodeModuleNotFound, "Module not found: %s", t.moduleID))
	}
	returned := false
	defer func() {
		if returned {
			return
		}
		if r := recover(); r != nil {
			result, err = nil, m.panicked(t, r)
			return
		}
		m.goexited(ctx, t)
	}()
	result, err = m.exec.Call(ctx, t.moduleID, inputs)
	returned = true
	return result, err
}

// panicked logs a module's panic with its stack and returns the attempt's
// error.
func (m *TaskManager) panicked(t *task, r any) error {
	m.log.Error("apcore: module panicked", "task_id", t.id, "module_id", t.moduleID,
		"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
	return &Error{Code: CodeModuleExecuteError, Message: fmt.Sprintf("panic: %v", r)}
}

// goexited settles an attempt whose module called runtime.Goexit, and
// starts a worker for the next queued task, since this worker's goroutine
// is ending.
func (m *TaskManager) goexited(ctx context.Context, t *task) {
	m.log.Error("apcore: module called runtime.Goexit", "task_id", t.id, "module_id", t.moduleID)
	m.settle(ctx, t, nil, &Error{
		Code:    CodeModuleExecuteError,
		Message: fmt.Sprintf("Module %s called runtime.Goexit instead of returning", t.moduleID),
	})
	w := t.worker
	w.current.Store(nil)
	if next, _ := m.sched.next(w, false); next != nil {
		m.sched.leave(w) // the slot goes on, on a goroutine of its own
		m.wg.Add(1)
		go m.work(nil, next)
	}
}

// keepable returns the result as the store will give it back, or the
// error that fails the task, for good, when the result cannot be kept: one
// that holds itself or nests too deeply to be copied, or, for a store that
// keeps JSON, one that does not encode. A JSON store's result is the
// JSON-decoded form, so that every reader sees the same value and types.
func (m *TaskManager) keepable(moduleID string, result any) (any, error) {
	if _, err := cloneResult(result, 0); err != nil {
		return nil, Permanent(invalidf("Module %s returned a result that cannot be kept: %v", moduleID, err))
	}
	if !m.jsonResults {
		return result, nil
	}
	b, err := json.Marshal(result)
	if err == nil {
		var decoded any
		if err = json.Unmarshal(b, &decoded); err == nil {
			return decoded, nil
		}
	}
	return nil, Permanent(invalidf("Module %s returned a result that cannot be kept: the store keeps JSON, and it does not encode: %v", moduleID, err))
}

// retryable reports whether a failed attempt may be retried: not when its
// error is Permanent, nor when the module is unknown (the protocol says
// such a task is never retried).
func retryable(err error) bool {
	return !isPermanent(err) && CodeOf(err) != CodeModuleNotFound
}

// failure logs a task's final failure and returns its record's message and
// code: the code of the first *Error in err's chain, or
// MODULE_EXECUTE_ERROR for an error that carries none.
func (m *TaskManager) failure(t *task, err error) (string, ErrorCode) {
	m.log.Warn("apcore: task failed", "task_id", t.id, "module_id", t.moduleID, "retries", t.retryCount, "error", err)
	msg, code := err.Error(), CodeOf(err)
	if msg == "" {
		msg = "module returned an error with an empty message"
	}
	if code == "" {
		code = CodeModuleExecuteError
	}
	return msg, code
}

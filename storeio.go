package apcore

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"sync/atomic"
	"time"
)

// This file is how the manager calls its store: with a timeout of its own
// for the calls it makes on its own behalf (ownCtx), within the caller's
// context for the calls a caller waits for (callFor), and the one write
// every transition goes through (write).

// defaultStoreTimeout bounds each store call the manager makes on its own
// behalf, unless WithStoreTimeout says otherwise.
const defaultStoreTimeout = 10 * time.Second

// ownCtx returns the context of a store call the manager makes on its own
// behalf: bounded by the store timeout, except for the MemoryStore, whose
// calls never block (and then no timer is armed for them).
func (m *TaskManager) ownCtx() (context.Context, context.CancelFunc) {
	if m.nonBlocking {
		return context.Background(), func() {}
	}
	return context.WithTimeout(context.Background(), m.storeTimeout)
}

// callFor makes a store call for a caller: it returns by ctx's end even
// when the store does not honour ctx (the call then goes on, on its own
// goroutine, until the store returns). A MemoryStore, or a context that
// never ends, needs no goroutine.
func callFor[T any](m *TaskManager, ctx context.Context, op string, fn func(context.Context) (T, error)) (T, error) {
	if m.nonBlocking || ctx.Done() == nil {
		return fn(ctx)
	}
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		v, err := fn(ctx)
		ch <- result{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		select {
		case r := <-ch: // the result came with the deadline: it wins
			return r.v, r.err
		default:
		}
		var zero T
		return zero, gaveUp(ctx, op)
	}
}

// handOff runs fn on a goroutine of its own for a caller whose context
// may end: it returns fn's result, or ok false once ctx ends first. fn's
// result reaches exactly one of the two: the caller, or, when the caller
// has gone, late (which may be nil), on fn's goroutine. So a call that
// saved something the caller was told had failed can undo it.
func handOff[T any](ctx context.Context, fn func() T, late func(T)) (v T, ok bool) {
	var handoff atomic.Int32 // 1: the caller took the result; 2: the caller has gone
	ch := make(chan T, 1)
	go func() {
		v := fn()
		if handoff.CompareAndSwap(0, 1) {
			ch <- v
			return
		}
		if late != nil {
			late(v)
		}
	}()
	select {
	case v := <-ch:
		return v, true
	case <-ctx.Done():
		if handoff.CompareAndSwap(0, 2) {
			return v, false
		}
		return <-ch, true
	}
}

// gaveUp is the error of a caller's call whose context ended before the
// store answered.
func gaveUp(ctx context.Context, op string) error {
	return &Error{Code: CodeTaskStoreUnavailable, Message: "task store: " + op + ": no answer before the context ended", Cause: context.Cause(ctx)}
}

// ctxMutex is a lock whose Lock gives up when a context ends: the lock for
// work that holds it across a store call (a lease's creation, an
// admission without a SharedStore), so that a caller waiting for it still
// returns by its deadline.
type ctxMutex struct{ ch chan struct{} }

func newCtxMutex() ctxMutex { return ctxMutex{ch: make(chan struct{}, 1)} }

// Lock takes the lock, or returns ctx's error once ctx ends first.
func (l ctxMutex) Lock(ctx context.Context) error {
	select {
	case l.ch <- struct{}{}:
		return nil
	default:
	}
	select {
	case l.ch <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Unlock releases the lock.
func (l ctxMutex) Unlock() { <-l.ch }

// writeResult is what became of a transition's write.
type writeResult uint8

const (
	written   writeResult = iota // the store took it
	ended                        // the task had ended: the record is now the stored outcome
	movedOn                      // another manager holds the task now
	overtaken                    // a later transition was written first: nothing was
)

// write saves a transition of t, or of a task of no manager here when t is
// nil (a cancel through another manager, FailStale). The store never lets
// a terminal record be overwritten: with a SharedStore, t's write happens
// only while this manager holds t (Update); otherwise with SaveIf(from
// pending, running) when the store has it. When the write is refused,
// *info becomes what the store says (see storedOutcome).
func (m *TaskManager) write(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	var ok bool
	var err error
	if m.shared != nil && t != nil {
		ok, err = m.update(ctx, t, info)
	} else {
		ok, err = m.overwrite(ctx, info)
	}
	if err != nil {
		return written, storeErr("save", err)
	}
	if ok {
		return written, nil
	}
	return m.storedOutcome(ctx, t, info)
}

// update is write's Update through a SharedStore: the record, held by this
// manager (or by no one, for a resumable task handed back). (Apart from
// write so that the worker's frames stay small; see settle.)
func (m *TaskManager) update(ctx context.Context, t *task, info *TaskInfo) (bool, error) {
	owner, notBefore := t.holder, time.Time{}
	if t.resumable && info.Status == StatusPending {
		owner, notBefore = "", t.notBefore
	}
	return m.shared.Update(ctx, StoredTask{Info: *info, Owner: owner, NotBefore: notBefore}, t.holder)
}

// overwrite is write without a SharedStore: SaveIf(from pending, running)
// with a ConditionalSaver, a plain Save otherwise. (Apart from write for
// its frame; see settle.)
func (m *TaskManager) overwrite(ctx context.Context, info *TaskInfo) (bool, error) {
	if m.cas != nil {
		return m.cas.SaveIf(ctx, *info, activeStatuses...)
	}
	if err := m.store.Save(ctx, *info); err != nil {
		return false, err
	}
	return true, nil
}

// storedOutcome reads what became of a task whose write the store refused:
// ended, with *info set to the stored terminal record; or movedOn when the
// record is active, which means another manager holds it. A record that is
// gone was lost by the store (a Redis that restarted empty, say; nothing
// else deletes an active record): for a task of this manager (t not nil)
// the manager writes back what it knows, so a known outcome never turns
// into another; for any other task (t nil) it ends cancelled here.
func (m *TaskManager) storedOutcome(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	current, err := m.store.Get(ctx, info.TaskID)
	switch {
	case err == nil && current.Status.IsTerminal():
		*info = current
		return ended, nil
	case err == nil:
		return movedOn, nil
	case !errors.Is(err, ErrTaskNotFound):
		return ended, storeErr("get", err)
	case t != nil:
		return m.restore(ctx, t, info)
	}
	info.Status, info.Result, info.Error, info.ErrorCode = StatusCancelled, nil, "", ""
	if info.CompletedAt.IsZero() {
		info.CompletedAt = now()
	}
	return ended, nil
}

// restore writes back the record of one of this manager's tasks that the
// store lost, as this manager knows it (*info, the write that was refused).
func (m *TaskManager) restore(ctx context.Context, t *task, info *TaskInfo) (writeResult, error) {
	m.log.Warn("apcore: the store lost the record of a task this manager holds; writing it back", "task_id", t.id, "status", info.Status)
	if m.shared == nil || info.Status.IsTerminal() {
		if err := m.store.Save(ctx, *info); err != nil {
			return ended, storeErr("write back", err)
		}
		return written, nil
	}
	st := StoredTask{Info: *info, Owner: t.holder, Resumable: t.resumable, Retry: t.retry, Timeout: t.timeout}
	if t.resumable {
		st.Inputs, _ = json.Marshal(t.inputs) // they encoded at Submit
		if info.Status == StatusPending {
			st.Owner, st.NotBefore = "", t.notBefore
		}
	}
	if _, err := m.shared.Insert(ctx, st, math.MaxInt); err != nil {
		return ended, storeErr("write back", err)
	}
	return written, nil
}

package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/apcore-go/apcore"
)

// TestReplicas runs two task managers over store, as two replicas of a
// service sharing it, and returns an error describing what went wrong, or
// nil. It checks that a task submitted through one is visible, listable and
// waitable (by polling) through the other, and that a cancel through the
// other ends a running task cancelled with no result even though the first
// manager's module finishes afterwards; and that every reader (Waits
// through either manager started before and after the end, Status, Result,
// List, the observer) sees a task's result as one value with one set of Go
// types: JSON-decoded when the store is an apcore.JSONStore that keeps
// JSON; and that a module made with apcore.Typed gets the same inputs
// whether its task runs where it was submitted or (with a SharedStore) is
// resumed on another manager, and apcore.ResultAs the same result from
// every reader. store should start empty; the managers are shut down
// before TestReplicas returns.
//
// The store must be an apcore.ConditionalSaver: without SaveIf nothing
// stops the owner's late write from overwriting another replica's cancel.
func TestReplicas(ctx context.Context, store apcore.TaskStore) (err error) {
	if ctx == nil || store == nil {
		return &apcore.Error{Code: apcore.CodeInvalidInput, Message: "storetest: TestReplicas needs a context and a store"}
	}
	if _, ok := store.(apcore.ConditionalSaver); !ok {
		return &apcore.Error{Code: apcore.CodeInvalidInput,
			Message: "storetest: a store shared by replicas must implement apcore.ConditionalSaver, or a late result can overwrite a cancel"}
	}
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	defer letGo()
	newReplica := func() (*apcore.TaskManager, error) {
		reg := apcore.NewRegistry()
		if err := reg.Register("replicas.slow", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
			started <- struct{}{}
			<-release // ignores its context: it finishes after the cancel
			return "late result", nil
		})); err != nil {
			return nil, err
		}
		if err := reg.Register("replicas.quick", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
			return map[string]any{"ok": true}, nil
		})); err != nil {
			return nil, err
		}
		return apcore.NewTaskManager(reg, apcore.WithStore(store))
	}
	a, err := newReplica()
	if err != nil {
		return err
	}
	b, err := newReplica()
	if err != nil {
		return err
	}
	defer func() {
		letGo()
		err = errors.Join(err, a.Shutdown(ctx), b.Shutdown(ctx))
	}()

	quick, err := a.Submit(ctx, "replicas.quick", nil)
	if err != nil {
		return fmt.Errorf("submit through the first replica: %w", err)
	}
	info, err := b.Wait(ctx, quick)
	if err != nil {
		return fmt.Errorf("wait through the second replica: %w", err)
	}
	if info.Status != apcore.StatusCompleted || !reflect.DeepEqual(info.Result, map[string]any{"ok": true}) {
		return fmt.Errorf("the second replica saw the first's task end %s with %#v", info.Status, info.Result)
	}

	id, err := a.Submit(ctx, "replicas.slow", nil)
	if err != nil {
		return fmt.Errorf("submit through the first replica: %w", err)
	}
	select {
	case <-started:
	case <-ctx.Done():
		return ctx.Err()
	}
	running, err := b.List(ctx, apcore.StatusRunning)
	if err != nil {
		return fmt.Errorf("list through the second replica: %w", err)
	}
	if len(running) != 1 || running[0].TaskID != id {
		return fmt.Errorf("the second replica lists %d running tasks, want the first's task %s", len(running), id)
	}
	ok, err := b.Cancel(ctx, id)
	if err != nil || !ok {
		return fmt.Errorf("cancel through the second replica: %v, %v", ok, err)
	}
	letGo() // the first replica's module returns its result now
	info, err = a.Wait(ctx, id)
	if err != nil {
		return fmt.Errorf("wait through the first replica: %w", err)
	}
	if info.Status != apcore.StatusCancelled || info.Result != nil {
		return fmt.Errorf("the owner saw its task end %s with %#v, want cancelled with no result", info.Status, info.Result)
	}
	stored, err := store.Get(ctx, id)
	if err != nil {
		return err
	}
	if stored.Status != apcore.StatusCancelled || stored.Result != nil {
		return fmt.Errorf("the store holds %s with %#v: the late result overwrote the cancel", stored.Status, stored.Result)
	}
	if n, err := b.TaskCount(ctx); err != nil || n != 2 {
		return fmt.Errorf("TaskCount through the second replica = %d (%v), want 2", n, err)
	}
	if err := checkReadersAgree(ctx, store); err != nil {
		return err
	}
	return checkTyped(ctx, store)
}

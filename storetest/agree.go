package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/apcore-go/apcore"
)

// checkReadersAgree runs two managers over store: tasks submitted through
// one return an int and a []int, and every reader must see one value with
// one set of Go types: a Wait through the owner started before the end,
// Waits after it through both managers, Status and List through the other,
// Result, and the owner's observer. With a store that keeps JSON that is
// the JSON-decoded form (float64 42, []any{1.0, 2.0}); with any other, the
// module's own value.
func checkReadersAgree(ctx context.Context, store apcore.TaskStore) (err error) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	letGo := func() { releaseOnce.Do(func() { close(release) }) }
	defer letGo()
	results := map[string]any{"agree.int": 42, "agree.slice": []int{1, 2}}
	want := results
	if js, ok := store.(apcore.JSONStore); ok && js.KeepsJSON() {
		want = map[string]any{"agree.int": float64(42), "agree.slice": []any{1.0, 2.0}}
	}
	reg := apcore.NewRegistry()
	for module, v := range results {
		if err := reg.Register(module, apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
			<-release
			return v, nil
		})); err != nil {
			return err
		}
	}
	var mu sync.Mutex
	observed := map[string]any{}
	owner, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithObserver(func(info apcore.TaskInfo) {
		if info.Status == apcore.StatusCompleted {
			mu.Lock()
			observed[info.TaskID] = info.Result
			mu.Unlock()
		}
	}))
	if err != nil {
		return err
	}
	other, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	if err != nil {
		return errors.Join(err, owner.Shutdown(ctx))
	}
	defer func() {
		letGo()
		err = errors.Join(err, owner.Shutdown(ctx), other.Shutdown(ctx))
	}()

	ids := map[string]string{}
	early := map[string]chan apcore.TaskInfo{}
	for module := range results {
		id, err := owner.Submit(ctx, module, nil)
		if err != nil {
			return fmt.Errorf("submit %s: %w", module, err)
		}
		ids[module] = id
		ch := make(chan apcore.TaskInfo, 1)
		early[module] = ch
		waiting := make(chan struct{})
		go func() {
			close(waiting)
			info, _ := owner.Wait(ctx, id)
			ch <- info
		}()
		<-waiting
	}
	letGo()
	var errs []error
	differ := func(reader, module string, got any) {
		if !reflect.DeepEqual(got, want[module]) {
			errs = append(errs, fmt.Errorf("readers disagree: %s gives %s's result as %#v (%T), want %#v (%T)",
				reader, module, got, got, want[module], want[module]))
		}
	}
	for module, id := range ids {
		differ("a Wait started before the end", module, (<-early[module]).Result)
		for name, m := range map[string]*apcore.TaskManager{"the owner": owner, "the other replica": other} {
			info, err := m.Wait(ctx, id)
			if err != nil {
				return fmt.Errorf("waiting through %s: %w", name, err)
			}
			differ("a Wait after the end through "+name, module, info.Result)
		}
		status, err := other.Status(ctx, id)
		if err != nil {
			return err
		}
		differ("Status through the other replica", module, status.Result)
		res, err := owner.Result(ctx, id)
		if err != nil {
			return err
		}
		differ("Result", module, res)
		listed, err := other.List(ctx, apcore.StatusCompleted)
		if err != nil {
			return err
		}
		found := false
		for _, info := range listed {
			if info.TaskID == id {
				found = true
				differ("List through the other replica", module, info.Result)
			}
		}
		if !found {
			errs = append(errs, fmt.Errorf("List through the other replica lacks %s's task", module))
		}
	}
	if err := owner.Shutdown(ctx); err != nil {
		return err
	}
	mu.Lock()
	defer mu.Unlock()
	for module, id := range ids {
		differ("the owner's observer", module, observed[id])
	}
	return errors.Join(errs...)
}

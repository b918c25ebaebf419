package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// typedIn and typedOut are the typed module's input and result in
// checkTyped: an int that JSON decodes as float64, a time, a list.
type typedIn struct {
	N     int       `json:"n"`
	At    time.Time `json:"at"`
	Names []string  `json:"names"`
}

type typedOut struct {
	Twice int      `json:"twice"`
	Names []string `json:"names"`
}

// checkTyped runs a typed module over store through three managers: a task
// run where it was submitted, and (with a SharedStore) a resumable task
// submitted to a manager with no slot and run by another. The module must
// get the same In on both paths, and ResultAs the same Out through Wait,
// Status and ListPage of either manager.
func checkTyped(ctx context.Context, store apcore.TaskStore) (err error) {
	var mu sync.Mutex
	seen := map[string]typedIn{}
	newManager := func(slots int) (*apcore.TaskManager, error) {
		reg := apcore.NewRegistry()
		if err := reg.Register("replicas.typed", apcore.Typed(func(ctx context.Context, in typedIn) (typedOut, error) {
			info, _ := apcore.TaskFromContext(ctx)
			mu.Lock()
			seen[info.TaskID] = in
			mu.Unlock()
			return typedOut{Twice: 2 * in.N, Names: in.Names}, nil
		})); err != nil {
			return nil, err
		}
		return apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithMaxConcurrent(slots))
	}
	var managers []*apcore.TaskManager
	defer func() {
		for _, m := range managers {
			err = errors.Join(err, m.Shutdown(ctx))
		}
	}()
	for _, slots := range []int{4, 0} {
		m, err := newManager(slots)
		if err != nil {
			return err
		}
		managers = append(managers, m)
	}
	runner, idle := managers[0], managers[1]
	want := typedIn{N: 21, At: time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC), Names: []string{"a", "b"}}
	inputs, err := apcore.InputsOf(want)
	if err != nil {
		return err
	}
	local, err := runner.Submit(ctx, "replicas.typed", map[string]any{"n": 21, "at": want.At, "names": []string{"a", "b"}})
	if err != nil {
		return fmt.Errorf("typed: submit: %w", err)
	}
	ids := []string{local}
	if _, ok := store.(apcore.SharedStore); ok {
		resumed, err := idle.Submit(ctx, "replicas.typed", inputs, apcore.WithResumable())
		if err != nil {
			return fmt.Errorf("typed: resumable submit: %w", err)
		}
		ids = append(ids, resumed)
	}
	for _, id := range ids {
		for _, m := range []*apcore.TaskManager{idle, runner} {
			info, err := m.Wait(ctx, id)
			if err != nil {
				return fmt.Errorf("typed: wait for %s: %w", id, err)
			}
			if info.Status != apcore.StatusCompleted {
				return fmt.Errorf("typed: task %s ended %s: %s", id, info.Status, info.Error)
			}
			st, err := m.Status(ctx, id)
			if err != nil {
				return err
			}
			for _, got := range []apcore.TaskInfo{info, st} {
				out, err := apcore.ResultAs[typedOut](got)
				if err != nil {
					return fmt.Errorf("typed: ResultAs of %s: %w", id, err)
				}
				if !reflect.DeepEqual(out, typedOut{Twice: 42, Names: []string{"a", "b"}}) {
					return fmt.Errorf("typed: ResultAs of %s = %+v", id, out)
				}
			}
		}
		mu.Lock()
		in := seen[id]
		mu.Unlock()
		if !reflect.DeepEqual(in, want) {
			return fmt.Errorf("typed: the module of task %s got %+v, want %+v (the same on every path)", id, in, want)
		}
	}
	page, err := idle.ListPage(ctx, apcore.ListOptions{Status: apcore.StatusCompleted, Newest: true, Limit: len(ids)})
	if err != nil {
		return fmt.Errorf("typed: ListPage: %w", err)
	}
	for _, info := range page.Tasks {
		if out, err := apcore.ResultAs[typedOut](info); err != nil || out.Twice != 42 {
			return fmt.Errorf("typed: ResultAs of %s from ListPage = %+v, %v", info.TaskID, out, err)
		}
	}
	return nil
}

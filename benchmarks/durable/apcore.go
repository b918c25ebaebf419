package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
)

// apcoreStore is one manager's store with its own pool.
type apcoreStore struct {
	store apcore.TaskStore
	waits func() waits
	close func() error
}

// openApcoreStore opens a store over sqlstore (PostgreSQL, through pgx's
// database/sql driver) or redisstore, on a pool of its own.
func (e *env) openApcoreStore(ctx context.Context, backend string) (apcoreStore, error) {
	switch backend {
	case "pg":
		db, err := e.sqlDB(ctx, "bench_apcore")
		if err != nil {
			return apcoreStore{}, err
		}
		s, err := sqlstore.New(ctx, db, sqlstore.PostgreSQL)
		if err != nil {
			_ = db.Close()
			return apcoreStore{}, err
		}
		return apcoreStore{s, func() waits { return sqlWaits(db) }, db.Close}, nil
	default:
		client, err := e.redisClient(ctx)
		if err != nil {
			return apcoreStore{}, err
		}
		s, err := redisstore.New(client)
		if err != nil {
			_ = client.Close()
			return apcoreStore{}, err
		}
		return apcoreStore{s, func() waits { return redisWaits(client) }, client.Close}, nil
	}
}

// startApcore sets up TaskManagers over sqlstore or redisstore, with
// w.workers modules at once each and room for every task. Completion is
// seen by an observer, which the manager calls after the store has taken
// the terminal write. A submit row has one manager, started now; a backlog
// row inserts its tasks through the store (resumable, held by no one, as a
// Submit with no manager running leaves them), and begin starts
// w.managers managers, each on a store of its own (its own pool).
func (e *env) startApcore(ctx context.Context, w workload) (*instance, error) {
	stores := make([]apcoreStore, 0, max(w.managers, 1))
	closeAll := func() error {
		var errs []error
		for _, s := range stores {
			errs = append(errs, s.close())
		}
		return errors.Join(errs...)
	}
	for range max(w.managers, 1) {
		s, err := e.openApcoreStore(ctx, w.backend)
		if err != nil {
			_ = closeAll()
			return nil, err
		}
		stores = append(stores, s)
	}
	var opts []apcore.SubmitOption
	if w.resumable {
		if _, ok := stores[0].store.(apcore.SharedStore); !ok {
			_ = closeAll()
			return nil, fmt.Errorf("%w: %s is not an apcore.SharedStore, so WithResumable is refused", errUnsupported, stores[0].store.Name())
		}
		opts = append(opts, apcore.WithResumable())
	}
	n := e.tasks(w)
	if w.managers > 0 {
		if err := e.insertBacklog(ctx, stores[0].store.(apcore.SharedStore), n); err != nil {
			_ = closeAll()
			return nil, fmt.Errorf("insert the backlog: %w", err)
		}
	}

	tr := newTracker(n)
	reg := apcore.NewRegistry()
	if err := reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		_ = closeAll()
		return nil, err
	}
	newManager := func(store apcore.TaskStore) (*apcore.TaskManager, error) {
		return apcore.NewTaskManager(reg,
			apcore.WithStore(store),
			apcore.WithMaxConcurrent(e.workers),
			apcore.WithMaxTasks(n+1000),
			apcore.WithLogger(e.log),
			apcore.WithObserver(func(info apcore.TaskInfo) {
				switch info.Status {
				case apcore.StatusCompleted:
					tr.end(true)
				case apcore.StatusFailed, apcore.StatusCancelled:
					tr.end(false)
				}
			}),
		)
	}
	var (
		mu   sync.Mutex
		mgrs []*apcore.TaskManager
	)
	inst := &instance{
		done:         tr.done,
		notCompleted: tr.bad.Load,
		pollCommands: func() int64 { return 0 },
		waits: func() waits {
			var sum waits
			for _, s := range stores {
				sum = sum.plus(s.waits())
			}
			return sum
		},
		completed: func(ctx context.Context) (int, error) {
			return stores[0].store.(apcore.Counter).Count(ctx, apcore.StatusCompleted)
		},
		close: func(ctx context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			var errs []error
			for _, m := range mgrs {
				errs = append(errs, m.Shutdown(ctx))
			}
			return errors.Join(append(errs, closeAll())...)
		},
	}
	if w.managers > 0 {
		inst.begin = func(context.Context) error {
			mu.Lock()
			defer mu.Unlock()
			for _, s := range stores {
				m, err := newManager(s.store)
				if err != nil {
					return err
				}
				mgrs = append(mgrs, m)
			}
			return nil
		}
		return inst, nil
	}
	mgr, err := newManager(stores[0].store)
	if err != nil {
		_ = closeAll()
		return nil, err
	}
	mgrs = append(mgrs, mgr)
	inst.submit = func(ctx context.Context, i int) error {
		_, err := mgr.Submit(ctx, "bench.noop", map[string]any{"n": i}, opts...)
		return err
	}
	return inst, nil
}

// insertBacklog inserts n resumable no-op tasks, pending and held by no
// one, as Submit WithResumable stores them when no manager here has a
// free slot: 16 goroutines, one Insert each at a time.
func (e *env) insertBacklog(ctx context.Context, s apcore.SharedStore, n int) error {
	var next atomic.Int64
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || failed.Load() != nil {
					return
				}
				now := time.Now()
				st := apcore.StoredTask{
					Info: apcore.TaskInfo{
						TaskID: uuid.NewString(), ModuleID: "bench.noop",
						Status: apcore.StatusPending, SubmittedAt: now,
					},
					Resumable: true,
					Inputs:    json.RawMessage(`{"n":` + strconv.Itoa(i) + `}`),
					NotBefore: now,
				}
				ok, err := s.Insert(ctx, st, n+1000)
				if err == nil && !ok {
					err = errors.New("the store refused the insert")
				}
				if err != nil {
					failed.Store(&err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		return *err
	}
	return nil
}

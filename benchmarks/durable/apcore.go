package main

import (
	"context"
	"fmt"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
)

// startApcore sets up a TaskManager over sqlstore (PostgreSQL, through
// pgx's database/sql driver) or redisstore, with w.workers modules at once
// and room for every task. Completion is seen by an observer, which the
// manager calls after the store has taken the terminal write.
func (e *env) startApcore(ctx context.Context, w workload) (*instance, error) {
	var (
		store   apcore.TaskStore
		closeDB func() error
	)
	switch w.backend {
	case "pg":
		db, err := e.sqlDB(ctx, "bench_apcore")
		if err != nil {
			return nil, err
		}
		s, err := sqlstore.New(ctx, db, sqlstore.PostgreSQL)
		if err != nil {
			_ = db.Close()
			return nil, err
		}
		store, closeDB = s, db.Close
	case "redis":
		client, err := e.redisClient(ctx)
		if err != nil {
			return nil, err
		}
		s, err := redisstore.New(client)
		if err != nil {
			_ = client.Close()
			return nil, err
		}
		store, closeDB = s, client.Close
	}
	var opts []apcore.SubmitOption
	if w.resumable {
		if _, ok := store.(apcore.SharedStore); !ok {
			_ = closeDB()
			return nil, fmt.Errorf("%w: %s is not an apcore.SharedStore, so WithResumable is refused", errUnsupported, store.Name())
		}
		opts = append(opts, apcore.WithResumable())
	}

	tr := newTracker(e.n)
	reg := apcore.NewRegistry()
	if err := reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		_ = closeDB()
		return nil, err
	}
	mgr, err := apcore.NewTaskManager(reg,
		apcore.WithStore(store),
		apcore.WithMaxConcurrent(e.workers),
		apcore.WithMaxTasks(e.n+1000),
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
	if err != nil {
		_ = closeDB()
		return nil, err
	}
	return &instance{
		submit: func(ctx context.Context, i int) error {
			_, err := mgr.Submit(ctx, "bench.noop", map[string]any{"n": i}, opts...)
			return err
		},
		done:         tr.done,
		notCompleted: tr.bad.Load,
		pollCommands: func() int64 { return 0 },
		completed: func(ctx context.Context) (int, error) {
			return store.(apcore.Counter).Count(ctx, apcore.StatusCompleted)
		},
		close: func(ctx context.Context) error {
			err := mgr.Shutdown(ctx)
			if cerr := closeDB(); err == nil {
				err = cerr
			}
			return err
		},
	}, nil
}

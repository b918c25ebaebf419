package main

import (
	"context"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
)

// noopArgs is river's job: its arguments are kept in the job row, as a
// resumable apcore task keeps its inputs.
type noopArgs struct {
	N int `json:"n"`
}

// Kind names the job kind.
func (noopArgs) Kind() string { return "bench_noop" }

// noopWorker does nothing.
type noopWorker struct {
	river.WorkerDefaults[noopArgs]
}

// Work returns at once.
func (noopWorker) Work(context.Context, *river.Job[noopArgs]) error { return nil }

// startRiver migrates a fresh schema and starts a river client on a pgx pool
// with w.workers workers. Completion is seen through river's subscription,
// whose events river sends after its completer has written the jobs'
// completed state.
func (e *env) startRiver(ctx context.Context, w workload) (*instance, error) {
	const schema = "bench_river"
	pool, err := e.pgPool(ctx, schema)
	if err != nil {
		return nil, err
	}
	driver := riverpgxv5.New(pool)
	migrator, err := rivermigrate.New(driver, &rivermigrate.Config{Schema: schema, Logger: e.log})
	if err == nil {
		_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		pool.Close()
		return nil, err
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, noopWorker{})
	client, err := river.NewClient(driver, &river.Config{
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: e.workers}},
		Workers:           workers,
		Schema:            schema,
		Logger:            e.log,
		FetchCooldown:     e.riverFetchCooldown, // 0: river's default
		FetchPollInterval: e.riverFetchPoll,     // 0: river's default
	})
	if err != nil {
		pool.Close()
		return nil, err
	}
	// The channel holds every event of the run: river drops events that do
	// not fit.
	events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
		ChanSize: e.n + 1000,
		Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
	})
	tr := newTracker(e.n)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		for ev := range events {
			tr.end(ev.Kind == river.EventKindJobCompleted)
		}
	}()
	if err := client.Start(ctx); err != nil {
		unsubscribe()
		<-listening
		pool.Close()
		return nil, err
	}
	return &instance{
		submit: func(ctx context.Context, i int) error {
			_, err := client.Insert(ctx, noopArgs{N: i}, nil)
			return err
		},
		done:         tr.done,
		notCompleted: tr.bad.Load,
		pollCommands: func() int64 { return 0 },
		completed: func(ctx context.Context) (int, error) {
			var n int
			err := e.pgAdmin.QueryRow(ctx, "SELECT count(*) FROM bench_river.river_job WHERE state = 'completed'").Scan(&n)
			return n, err
		},
		close: func(ctx context.Context) error {
			err := client.Stop(ctx)
			unsubscribe()
			<-listening
			pool.Close()
			return err
		},
	}, nil
}

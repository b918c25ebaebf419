package main

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
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
// completed state. A backlog row inserts its jobs first (InsertMany, 1,000
// a call, through a client that does not work them), and begin starts
// w.managers clients, each on a pool of its own.
func (e *env) startRiver(ctx context.Context, w workload) (*instance, error) {
	const schema = "bench_river"
	var pools []*pgxpool.Pool
	closePools := func() {
		for _, p := range pools {
			p.Close()
		}
	}
	for range max(w.managers, 1) {
		pool, err := e.pgPool(ctx, schema)
		if err != nil {
			closePools()
			return nil, err
		}
		pools = append(pools, pool)
	}
	migrator, err := rivermigrate.New(riverpgxv5.New(pools[0]), &rivermigrate.Config{Schema: schema, Logger: e.log})
	if err == nil {
		_, err = migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	}
	if err != nil {
		closePools()
		return nil, err
	}
	n := e.tasks(w)
	if w.managers > 0 {
		if err := e.insertRiverBacklog(ctx, pools[0], schema, n); err != nil {
			closePools()
			return nil, err
		}
	}
	workers := river.NewWorkers()
	river.AddWorker(workers, noopWorker{})
	tr := newTracker(n)
	var (
		clients   []*river.Client[pgx.Tx]
		stops     []func()
		listening []chan struct{}
	)
	stopAll := func(ctx context.Context) error {
		var errs []error
		for _, c := range clients {
			errs = append(errs, c.Stop(ctx))
		}
		for i, unsubscribe := range stops {
			unsubscribe()
			<-listening[i]
		}
		closePools()
		return errors.Join(errs...)
	}
	for _, pool := range pools {
		client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{
			Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: e.workers}},
			Workers:           workers,
			Schema:            schema,
			Logger:            e.log,
			FetchCooldown:     e.riverFetchCooldown, // 0: river's default
			FetchPollInterval: e.riverFetchPoll,     // 0: river's default
		})
		if err != nil {
			_ = stopAll(ctx)
			return nil, err
		}
		// The channel holds every event of the run: river drops events that
		// do not fit.
		events, unsubscribe := client.SubscribeConfig(&river.SubscribeConfig{
			ChanSize: n + 1000,
			Kinds:    []river.EventKind{river.EventKindJobCompleted, river.EventKindJobFailed, river.EventKindJobCancelled},
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for ev := range events {
				tr.end(ev.Kind == river.EventKindJobCompleted)
			}
		}()
		clients, stops, listening = append(clients, client), append(stops, unsubscribe), append(listening, done)
	}
	start := func(ctx context.Context) error {
		for _, c := range clients {
			if err := c.Start(ctx); err != nil {
				return err
			}
		}
		return nil
	}
	inst := &instance{
		done:         tr.done,
		notCompleted: tr.bad.Load,
		pollCommands: func() int64 { return 0 },
		waits: func() waits {
			var sum waits
			for _, p := range pools {
				sum = sum.plus(pgxWaits(p))
			}
			return sum
		},
		completed: func(ctx context.Context) (int, error) {
			var n int
			err := e.pgAdmin.QueryRow(ctx, "SELECT count(*) FROM bench_river.river_job WHERE state = 'completed'").Scan(&n)
			return n, err
		},
		close: stopAll,
	}
	if w.managers > 0 {
		inst.begin = start
		return inst, nil
	}
	if err := start(ctx); err != nil {
		_ = stopAll(ctx)
		return nil, err
	}
	client := clients[0]
	inst.submit = func(ctx context.Context, i int) error {
		_, err := client.Insert(ctx, noopArgs{N: i}, nil)
		return err
	}
	return inst, nil
}

// insertRiverBacklog inserts n no-op jobs through an insert-only client.
func (e *env) insertRiverBacklog(ctx context.Context, pool *pgxpool.Pool, schema string, n int) error {
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Schema: schema, Logger: e.log})
	if err != nil {
		return err
	}
	for i := 0; i < n; i += 1000 {
		batch := make([]river.InsertManyParams, 0, 1000)
		for j := i; j < min(i+1000, n); j++ {
			batch = append(batch, river.InsertManyParams{Args: noopArgs{N: j}})
		}
		if _, err := client.InsertMany(ctx, batch); err != nil {
			return err
		}
	}
	return nil
}

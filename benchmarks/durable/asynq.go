package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// asynqCompleted is the sorted set in which asynq keeps the completed tasks
// of the default queue while their retention lasts.
const asynqCompleted = "asynq:{default}:completed"

// startAsynq starts an asynq server with w.workers workers and a client, on
// one counted go-redis client. Tasks are enqueued with Retention(1h), so
// that asynq keeps each completed task's record, as apcore does. asynq has
// no hook that runs after it has written a completion, so the harness polls
// the size of the completed set (one ZCARD every -asynq-poll, on its own
// connection; those commands are counted neither as the client's round
// trips nor as the server's commands). A backlog row enqueues its tasks
// first (16 goroutines, one Enqueue each at a time), and begin starts
// w.managers servers, each on a go-redis client (a pool) of its own.
func (e *env) startAsynq(ctx context.Context, w workload) (*instance, error) {
	var rcs []*redis.Client
	closeClients := func() error {
		var errs []error
		for _, rc := range rcs {
			errs = append(errs, rc.Close())
		}
		return errors.Join(errs...)
	}
	for range max(w.managers, 1) {
		rc, err := e.redisClient(ctx)
		if err != nil {
			_ = closeClients()
			return nil, err
		}
		rcs = append(rcs, rc)
	}
	client := asynq.NewClientFromRedisClient(rcs[0])
	enqueue := func(ctx context.Context, i int) error {
		task := asynq.NewTask("bench:noop", []byte(`{"n":`+strconv.Itoa(i)+`}`))
		_, err := client.EnqueueContext(ctx, task, asynq.Retention(time.Hour))
		return err
	}
	n := e.tasks(w)
	if w.managers > 0 {
		var next atomic.Int64
		var failed atomic.Pointer[error]
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < n && failed.Load() == nil; i = int(next.Add(1)) - 1 {
					if err := enqueue(ctx, i); err != nil {
						failed.Store(&err)
					}
				}
			})
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			_ = closeClients()
			return nil, *err
		}
	}
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error { return nil })
	var servers []*asynq.Server
	for _, rc := range rcs {
		servers = append(servers, asynq.NewServerFromRedisClient(rc, asynq.Config{
			Concurrency:       e.workers,
			TaskCheckInterval: e.asynqCheck, // 0: asynq's default
			LogLevel:          asynq.WarnLevel,
		}))
	}
	var (
		mu      sync.Mutex
		started []*asynq.Server
	)
	start := func(context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		for _, srv := range servers {
			if err := srv.Start(mux); err != nil {
				return err
			}
			started = append(started, srv)
		}
		return nil
	}

	done := make(chan struct{})
	var polls atomic.Int64
	pollCtx, stopPoll := context.WithCancel(context.Background())
	var poller sync.WaitGroup
	poller.Go(func() {
		tick := time.NewTicker(e.asynqPoll)
		defer tick.Stop()
		for {
			select {
			case <-pollCtx.Done():
				return
			case <-tick.C:
			}
			got, err := e.redisAdmin.ZCard(pollCtx, asynqCompleted).Result()
			polls.Add(1)
			if err == nil && got >= int64(n) {
				close(done)
				return
			}
		}
	})
	inst := &instance{
		done:         done,
		notCompleted: func() int64 { return 0 }, // a task that fails is retried, and the run times out
		pollCommands: polls.Load,
		waits: func() waits {
			var sum waits
			for _, rc := range rcs {
				sum = sum.plus(redisWaits(rc))
			}
			return sum
		},
		completed: func(ctx context.Context) (int, error) {
			got, err := e.redisAdmin.ZCard(ctx, asynqCompleted).Result()
			return int(got), err
		},
		close: func(context.Context) error {
			stopPoll()
			poller.Wait()
			mu.Lock()
			for _, srv := range started {
				srv.Shutdown()
			}
			mu.Unlock()
			return closeClients()
		},
	}
	if w.managers > 0 {
		inst.begin = start
		return inst, nil
	}
	if err := start(ctx); err != nil {
		_ = inst.close(ctx)
		return nil, err
	}
	inst.submit = enqueue
	return inst, nil
}

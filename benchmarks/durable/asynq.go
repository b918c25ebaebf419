package main

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
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
// trips nor as the server's commands).
func (e *env) startAsynq(ctx context.Context, w workload) (*instance, error) {
	rc, err := e.redisClient(ctx)
	if err != nil {
		return nil, err
	}
	srv := asynq.NewServerFromRedisClient(rc, asynq.Config{
		Concurrency:       e.workers,
		TaskCheckInterval: e.asynqCheck, // 0: asynq's default
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.HandleFunc("bench:noop", func(context.Context, *asynq.Task) error { return nil })
	if err := srv.Start(mux); err != nil {
		_ = rc.Close()
		return nil, err
	}
	client := asynq.NewClientFromRedisClient(rc)

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
			n, err := e.redisAdmin.ZCard(pollCtx, asynqCompleted).Result()
			polls.Add(1)
			if err == nil && n >= int64(e.n) {
				close(done)
				return
			}
		}
	})
	return &instance{
		submit: func(ctx context.Context, i int) error {
			task := asynq.NewTask("bench:noop", []byte(`{"n":`+strconv.Itoa(i)+`}`))
			_, err := client.EnqueueContext(ctx, task, asynq.Retention(time.Hour))
			return err
		},
		done:         done,
		notCompleted: func() int64 { return 0 }, // a task that fails is retried, and the run times out
		pollCommands: polls.Load,
		completed: func(ctx context.Context) (int, error) {
			n, err := e.redisAdmin.ZCard(ctx, asynqCompleted).Result()
			return int(n), err
		},
		close: func(context.Context) error {
			stopPoll()
			poller.Wait()
			srv.Shutdown()
			return rc.Close()
		},
	}, nil
}

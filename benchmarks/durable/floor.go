package main

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// The floor is the least a durable task record can cost: three single-row
// writes, each its own round trip, none batched: the insert at submit, the
// conditional update to running, the conditional update to completed. The
// submitters insert and hand the id over a channel to the workers, which
// make the two updates; the completion is recorded when the second update
// has returned. Ids are UUIDs made by the client, as apcore's are, and the
// inputs are kept in the record, as river and asynq keep them.

const floorTable = `CREATE TABLE floor_tasks (
	id           text PRIMARY KEY,
	status       text NOT NULL,
	inputs       text NOT NULL,
	submitted_at bigint NOT NULL,
	started_at   bigint,
	completed_at bigint
)`

// On Redis each step is one small script, so that the update checks the
// state it leaves in the same atomic step.
var (
	floorInsert = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'inputs', ARGV[1], 'submitted_at', ARGV[2])
return 1`)
	floorMove = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4])
return 1`)
)

// errLost is a conditional write of the floor that found the record in
// another state.
var errLost = errors.New("the record was not in the expected state")

// floorStep is one conditional update of the floor: from -> to, stamping
// the given time column.
type floorStep struct{ from, to, column string }

var floorSteps = [2]floorStep{{"pending", "running", "started_at"}, {"running", "completed", "completed_at"}}

// startFloor sets the floor up on w's backend.
func (e *env) startFloor(ctx context.Context, w workload) (*instance, error) {
	var (
		insert  func(ctx context.Context, id, inputs string) error
		update  func(ctx context.Context, id string, step floorStep) error
		count   func(ctx context.Context) (int, error)
		closeDB func()
		waitsOf func() waits
		ids     []string
		idsMu   sync.Mutex
	)
	now := func() int64 { return time.Now().UnixMicro() }
	switch w.backend {
	case "pg":
		pool, err := e.pgPool(ctx, "bench_floor")
		if err != nil {
			return nil, err
		}
		if _, err := pool.Exec(ctx, floorTable); err != nil {
			pool.Close()
			return nil, err
		}
		insert = func(ctx context.Context, id, inputs string) error {
			_, err := pool.Exec(ctx, "INSERT INTO floor_tasks (id, status, inputs, submitted_at) VALUES ($1, 'pending', $2, $3)", id, inputs, now())
			return err
		}
		queries := [2]string{
			"UPDATE floor_tasks SET status = 'running', started_at = $2 WHERE id = $1 AND status = 'pending'",
			"UPDATE floor_tasks SET status = 'completed', completed_at = $2 WHERE id = $1 AND status = 'running'",
		}
		update = func(ctx context.Context, id string, step floorStep) error {
			q := queries[0]
			if step.to == "completed" {
				q = queries[1]
			}
			tag, err := pool.Exec(ctx, q, id, now())
			if err == nil && tag.RowsAffected() != 1 {
				err = errLost
			}
			return err
		}
		count = func(ctx context.Context) (int, error) {
			var n int
			err := e.pgAdmin.QueryRow(ctx, "SELECT count(*) FROM bench_floor.floor_tasks WHERE status = 'completed'").Scan(&n)
			return n, err
		}
		closeDB, waitsOf = pool.Close, func() waits { return pgxWaits(pool) }
	case "redis":
		client, err := e.redisClient(ctx)
		if err != nil {
			return nil, err
		}
		for _, s := range []*redis.Script{floorInsert, floorMove} {
			if err := s.Load(ctx, client).Err(); err != nil {
				_ = client.Close()
				return nil, err
			}
		}
		key := func(id string) string { return "floor:" + id }
		insert = func(ctx context.Context, id, inputs string) error {
			ok, err := floorInsert.Run(ctx, client, []string{key(id)}, inputs, now()).Int()
			if err == nil && ok != 1 {
				err = errLost
			}
			return err
		}
		update = func(ctx context.Context, id string, step floorStep) error {
			ok, err := floorMove.Run(ctx, client, []string{key(id)}, step.from, step.to, step.column, now()).Int()
			if err == nil && ok != 1 {
				err = errLost
			}
			return err
		}
		count = func(ctx context.Context) (int, error) {
			idsMu.Lock()
			defer idsMu.Unlock()
			n := 0
			for start := 0; start < len(ids); start += 1000 {
				pipe := e.redisAdmin.Pipeline()
				var cmds []*redis.StringCmd
				for _, id := range ids[start:min(start+1000, len(ids))] {
					cmds = append(cmds, pipe.HGet(ctx, key(id), "status"))
				}
				if _, err := pipe.Exec(ctx); err != nil {
					return n, err
				}
				for _, c := range cmds {
					if c.Val() == "completed" {
						n++
					}
				}
			}
			return n, nil
		}
		closeDB, waitsOf = func() { _ = client.Close() }, func() waits { return redisWaits(client) }
	}

	tr := newTracker(e.n)
	queue := make(chan string, e.n)
	runCtx, stop := context.WithCancel(context.Background())
	var workers sync.WaitGroup
	for range e.workers {
		workers.Go(func() {
			for {
				var id string
				select {
				case id = <-queue:
				case <-runCtx.Done():
					return
				}
				err := update(runCtx, id, floorSteps[0])
				if err == nil {
					// The task's module would run here; it does nothing.
					err = update(runCtx, id, floorSteps[1])
				}
				if err != nil && runCtx.Err() != nil {
					return
				}
				if err != nil {
					e.log.Warn("floor: update failed", "id", id, "error", err)
				}
				tr.end(err == nil)
			}
		})
	}
	return &instance{
		submit: func(ctx context.Context, i int) error {
			id := uuid.NewString()
			if err := insert(ctx, id, `{"n":`+strconv.Itoa(i)+`}`); err != nil {
				return err
			}
			if w.backend == "redis" {
				idsMu.Lock()
				ids = append(ids, id)
				idsMu.Unlock()
			}
			queue <- id
			return nil
		},
		done:         tr.done,
		notCompleted: tr.bad.Load,
		pollCommands: func() int64 { return 0 },
		waits:        waitsOf,
		completed:    count,
		close: func(context.Context) error {
			stop()
			workers.Wait()
			closeDB()
			return nil
		},
	}, nil
}

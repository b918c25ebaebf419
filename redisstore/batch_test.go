package redisstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pipelineCounter counts the pipelines a client sends.
type pipelineCounter struct{ n atomic.Int64 }

func (h *pipelineCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *pipelineCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return next
}
func (h *pipelineCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// TestConcurrentUpdatesGoTogether runs Updates from many goroutines at once,
// half of them by a manager that does not hold the task, twice over, the
// second time after Redis has forgotten the scripts (SCRIPT FLUSH, as after
// a restart): each caller gets its own answer, every record ends as its
// holder wrote it, and some Updates went to Redis together, in pipelines.
func TestConcurrentUpdatesGoTogether(t *testing.T) {
	c := client(t)
	var pipes pipelineCounter
	c.AddHook(&pipes)
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	const n = 200
	now := time.Now()
	for round := range 2 {
		if round == 1 {
			require.NoError(t, c.ScriptFlush(ctx(t)).Err())
		}
		for i := range n {
			info := apcore.TaskInfo{TaskID: fmt.Sprintf("b%d-%d", round, i), ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now}
			ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, 1<<20)
			require.NoError(t, err)
			require.True(t, ok)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				holder := "m"
				if i%2 == 1 {
					holder = "someone-else"
				}
				info := apcore.TaskInfo{TaskID: fmt.Sprintf("b%d-%d", round, i), ModuleID: "a.b", Status: apcore.StatusCompleted,
					SubmittedAt: now, CompletedAt: now, Result: map[string]any{"i": float64(i)}}
				ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: holder}, holder)
				assert.NoError(t, err)
				assert.Equal(t, holder == "m", ok, "task %d, holder %s", i, holder)
			})
		}
		close(start)
		wg.Wait()
		for i := range n {
			got, err := s.Get(ctx(t), fmt.Sprintf("b%d-%d", round, i))
			require.NoError(t, err)
			if i%2 == 0 {
				assert.Equal(t, apcore.StatusCompleted, got.Status)
				assert.Equal(t, map[string]any{"i": float64(i)}, got.Result)
			} else {
				assert.Equal(t, apcore.StatusPending, got.Status, "an Update by a manager that does not hold the task writes nothing")
			}
		}
	}
	assert.Positive(t, pipes.n.Load(), "no Updates went to Redis together")
}

// TestUpdateHonoursItsContext pauses Redis (a proxy between the store's
// client and the server holds every byte): an Update on its way to Redis,
// and one queued behind it, each return their context's error by its
// 200 ms deadline, where the client's own timeouts would take seconds; an
// Update whose context has ended returns at once. Once Redis answers
// again, the queued Update turns out never to have been sent, and the
// store goes on working.
func TestUpdateHonoursItsContext(t *testing.T) {
	direct := client(t)
	opts, err := redis.ParseURL(os.Getenv("APCORE_TEST_REDIS"))
	require.NoError(t, err)
	p := newProxy(t, opts.Addr)
	c := redis.NewClient(&redis.Options{Addr: p.addr(), DB: opts.DB})
	t.Cleanup(func() { c.Close() })
	s, err := redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, direct)))
	require.NoError(t, err)
	now := time.Now()
	task := func(id string, st apcore.TaskStatus) apcore.StoredTask {
		return apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: st, SubmittedAt: now}, Owner: "m"}
	}
	for _, id := range []string{"on-its-way", "queued", "after"} {
		ok, err := s.Insert(ctx(t), task(id, apcore.StatusPending), 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	const deadline = 200 * time.Millisecond
	update := func(id string) (time.Duration, error) {
		c, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		_, err := s.Update(c, task(id, apcore.StatusRunning), "m")
		return time.Since(start), err
	}

	p.pause()
	for _, id := range []string{"on-its-way", "queued"} {
		took, err := update(id)
		require.ErrorIs(t, err, context.DeadlineExceeded, id)
		assert.ErrorIs(t, err, apcore.ErrStoreUnavailable, id)
		assert.Less(t, took, deadline+300*time.Millisecond, "the Update of %s returned %v after its context ended", id, took-deadline)
	}
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = s.Update(ended, task("queued", apcore.StatusCompleted), "m")
	require.ErrorIs(t, err, context.Canceled)

	p.unpause()
	ok, err := s.Update(ctx(t), task("after", apcore.StatusRunning), "m") // sent after what was on its way
	require.NoError(t, err)
	require.True(t, ok)
	got, err := s.Get(ctx(t), "queued")
	require.NoError(t, err)
	assert.Equal(t, apcore.StatusPending, got.Status, "an Update that left the queue as its context ended was sent")
	ok, err = s.Update(ctx(t), task("queued", apcore.StatusRunning), "m")
	require.NoError(t, err)
	assert.True(t, ok)
}

// TestUpdatesWithEndingContexts runs Updates from many goroutines at
// once, half of them with contexts that end at random moments: every
// Update returns, each either with its context's error or with its own
// answer, and the store's Updates work afterwards.
func TestUpdatesWithEndingContexts(t *testing.T) {
	s, _ := store(t)
	const n = 200
	now := time.Now()
	for i := range n {
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("e-%d", i), ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now}
		ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, 1<<20)
		require.NoError(t, err)
		require.True(t, ok)
	}
	var wg sync.WaitGroup
	var cancelled atomic.Int64
	for i := range n {
		wg.Go(func() {
			c := ctx(t)
			if i%2 == 1 {
				var cancel context.CancelFunc
				c, cancel = context.WithTimeout(c, time.Duration(rand.IntN(10_000))*time.Microsecond)
				defer cancel()
			}
			info := apcore.TaskInfo{TaskID: fmt.Sprintf("e-%d", i), ModuleID: "a.b", Status: apcore.StatusRunning, SubmittedAt: now}
			ok, err := s.Update(c, apcore.StoredTask{Info: info, Owner: "m"}, "m")
			switch {
			case err == nil:
				assert.True(t, ok, "task %d", i)
			case i%2 == 1:
				assert.ErrorIs(t, err, context.DeadlineExceeded, "task %d", i)
				cancelled.Add(1)
			default:
				t.Errorf("task %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	t.Logf("%d of %d Updates returned as their contexts ended", cancelled.Load(), n/2)
	for i := range n {
		info := apcore.TaskInfo{TaskID: fmt.Sprintf("e-%d", i), ModuleID: "a.b", Status: apcore.StatusCompleted, SubmittedAt: now, CompletedAt: now}
		ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, "m")
		require.NoError(t, err)
		require.True(t, ok, "task %d", i)
	}
}

package redisstore_test

import (
	"context"
	"fmt"
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

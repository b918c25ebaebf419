package redisstore

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestBatchAfterRedisForgetsTheScript sends a batch of two Updates as a
// pipeline to a Redis that no longer has the script (SCRIPT FLUSH, as after
// a restart): each is sent again whole, and both are written.
func TestBatchAfterRedisForgetsTheScript(t *testing.T) {
	s, c := internalStore(t, "batch")
	ctx := context.Background()
	now := time.Now()
	var batch []*pending
	for _, id := range []string{"x", "y"} {
		info := apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now}
		ok, err := s.Insert(ctx, apcore.StoredTask{Info: info, Owner: "m"}, 100)
		require.NoError(t, err)
		require.True(t, ok)
		info.Status = apcore.StatusRunning
		data, err := s.encode(&info)
		require.NoError(t, err)
		batch = append(batch, &pending{ctx: ctx, done: make(chan struct{}), keys: s.recordKeys(id), args: []any{s.base, id, data, "running", "m", "", "+inf", "m",
			s.seen.Load(), now.Add(time.Minute).UnixMicro(), now.UnixMicro()}})
	}
	require.NoError(t, c.ScriptFlush(ctx).Err())
	s.send(ctx, batch)
	for _, p := range batch {
		require.NoError(t, p.err)
		require.EqualValues(t, 1, p.n)
	}
	for _, id := range []string{"x", "y"} {
		got, err := s.Get(ctx, id)
		require.NoError(t, err)
		require.Equal(t, apcore.StatusRunning, got.Status)
	}
}

// internalStore returns a store on the test Redis under a fresh prefix
// named for the test, and its client; the prefix's keys go at the end.
func internalStore(t *testing.T, name string, o ...Option) (*Store, *redis.Client) {
	t.Helper()
	opts, err := redis.ParseURL(os.Getenv("APCORE_TEST_REDIS"))
	require.NoError(t, err, "APCORE_TEST_REDIS")
	c := redis.NewClient(opts)
	s, err := New(c, append([]Option{WithPrefix("apcore-test:" + name + ":" + time.Now().Format("150405.000000") + ":")}, o...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx := context.Background()
		if keys, _ := c.Keys(ctx, s.base+"*").Result(); len(keys) > 0 {
			c.Del(ctx, keys...)
		}
		c.Close()
	})
	return s, c
}

package redisstore_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clusterPrefix is a key prefix no other test uses; its keys go at the end.
func clusterPrefix(t *testing.T, c *redis.ClusterClient) string {
	p := fmt.Sprintf("apcore-test:%d:%d:", os.Getpid(), prefixSeq.Add(1))
	t.Cleanup(func() {
		tag := "{" + p[:len(p)-1] + "}"
		_ = c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
			keys, err := m.Keys(ctx, tag+"*").Result()
			if err == nil && len(keys) > 0 {
				m.Del(ctx, keys...)
			}
			return nil
		})
	})
	return p
}

// The whole contract holds on a 3-master Redis Cluster through a
// ClusterClient: every script's keys are in one slot.
func TestClusterContract(t *testing.T) {
	c := clusterClient(t)
	for _, layout := range []int{1, 2} {
		t.Run(fmt.Sprint("layout=", layout), func(t *testing.T) {
			storetest.Run(t, func() (apcore.TaskStore, error) {
				return redisstore.New(c, redisstore.WithPrefix(clusterPrefix(t, c)), redisstore.WithLayout(layout))
			})
		})
	}
	_, err := redisstore.New(c, redisstore.WithHashTag(false))
	assert.ErrorIs(t, err, apcore.ErrInvalidInput, "a cluster client without the hash tag")
}

// Managers run tasks, plain and resumable, over a Redis Cluster, and two
// replicas share it.
func TestClusterManagers(t *testing.T) {
	c := clusterClient(t)
	prefix := clusterPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	require.NoError(t, storetest.TestReplicas(ctx(t), s))

	s1, err := redisstore.New(c, redisstore.WithPrefix(prefix+"run:"))
	require.NoError(t, err)
	s2, err := redisstore.New(clusterClient(t), redisstore.WithPrefix(prefix+"run:"))
	require.NoError(t, err)
	reg := registry(t, map[string]func(context.Context, map[string]any) (any, error){
		"cluster.echo": func(_ context.Context, in map[string]any) (any, error) { return in, nil },
	})
	a := manager(t, reg, s1, apcore.WithLeaseTTL(2*time.Second))
	b := manager(t, reg, s2, apcore.WithLeaseTTL(2*time.Second))
	var ids []string
	for i := range 200 {
		var opts []apcore.SubmitOption
		if i%4 == 0 {
			opts = append(opts, apcore.WithResumable())
		}
		id, err := a.Submit(ctx(t), "cluster.echo", map[string]any{"i": i}, opts...)
		require.NoError(t, err)
		ids = append(ids, id)
	}
	for i, id := range ids {
		info, err := b.Wait(ctx(t), id)
		require.NoError(t, err)
		require.Equal(t, apcore.StatusCompleted, info.Status)
		assert.Equal(t, map[string]any{"i": float64(i)}, info.Result)
	}
	n, err := s2.Count(ctx(t), apcore.StatusCompleted)
	require.NoError(t, err)
	assert.Equal(t, 200, n)
}

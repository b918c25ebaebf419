package redisstore_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// newClient is another connection to the standalone test server, as
// another process would have.
func newClient(t testing.TB) *redis.Client {
	t.Helper()
	opts, err := redis.ParseURL(os.Getenv("APCORE_TEST_REDIS"))
	require.NoError(t, err)
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

// clusterClient connects to the 3-master cluster that scripts/test.sh
// starts (scripts/services.sh: start_redis_cluster).
func clusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	addrs := os.Getenv("APCORE_TEST_REDIS_CLUSTER")
	if addrs == "" {
		t.Fatal("APCORE_TEST_REDIS_CLUSTER is not set: run ./scripts/test.sh, which starts a Redis Cluster (scripts/services.sh: start_redis_cluster)")
	}
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.ForEachMaster(context.Background(), func(ctx context.Context, m *redis.Client) error {
		return m.Ping(ctx).Err()
	}), "the Redis Cluster is not reachable")
	return c
}

// registry registers the modules the tests run.
func registry(t testing.TB, modules map[string]func(context.Context, map[string]any) (any, error)) *apcore.Registry {
	t.Helper()
	reg := apcore.NewRegistry()
	for id, fn := range modules {
		require.NoError(t, reg.Register(id, apcore.ModuleFunc(fn)))
	}
	return reg
}

// manager starts a manager over store and shuts it down at the end.
func manager(t testing.TB, reg *apcore.Registry, store apcore.TaskStore, opts ...apcore.Option) *apcore.TaskManager {
	t.Helper()
	m, err := apcore.NewTaskManager(reg, append([]apcore.Option{apcore.WithStore(store)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Shutdown(c)
	})
	return m
}

// store returns a store with a fresh prefix over its own client.
func store(t testing.TB, opts ...redisstore.Option) (*redisstore.Store, *redis.Client) {
	t.Helper()
	c := client(t)
	s, err := redisstore.New(c, append([]redisstore.Option{redisstore.WithPrefix(freshPrefix(t, c))}, opts...)...)
	require.NoError(t, err)
	return s, c
}

// gate is a channel that closes once.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// eventually waits up to d for cond, checking every 10ms.
func eventually(d time.Duration, cond func() bool) bool {
	end := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(end) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// throwaway fails the test unless the server c talks to was started by
// scripts/services.sh (its folder is one of that script's temporary ones):
// the tests that flush, kill or restart a server refuse any other.
func throwaway(t testing.TB, c *redis.Client) {
	t.Helper()
	dir, err := c.ConfigGet(context.Background(), "dir").Result()
	require.NoError(t, err)
	if !strings.Contains(dir["dir"], "/apcore-services.") {
		t.Fatalf("the Redis server's folder is %q, not one of scripts/services.sh: this test flushes, kills and restarts its server, so it runs only on a throwaway one (./scripts/test.sh)", dir["dir"])
	}
}

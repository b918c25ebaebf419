package redisstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client connects to the test server that scripts/test.sh starts. Without
// one the test fails: these tests are about the real server.
func client(t testing.TB) *redis.Client {
	t.Helper()
	url := os.Getenv("APCORE_TEST_REDIS")
	if url == "" {
		t.Fatal("APCORE_TEST_REDIS is not set: run ./scripts/test.sh, which starts a Redis server, or point it at one")
	}
	opts, err := redis.ParseURL(url)
	require.NoError(t, err)
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err(), "the Redis test server is not reachable")
	return c
}

var prefixSeq atomic.Int64

// freshPrefix is a key prefix no other test uses; its keys go at the end.
func freshPrefix(t testing.TB, c *redis.Client) string {
	p := fmt.Sprintf("apcore-test:%d:%d:", os.Getpid(), prefixSeq.Add(1))
	t.Cleanup(func() {
		keys, _ := c.Keys(context.Background(), "*"+strings.TrimSuffix(p, ":")+"*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	})
	return p
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// TestContract runs storetest's checks, each a subtest, without a hash
// tag; with one, through storetest.TestStore, which reports them as one
// error, as a caller without a *testing.T would.
func TestContract(t *testing.T) {
	c := client(t)
	t.Run("hashtag=false", func(t *testing.T) {
		storetest.Run(t, func() (apcore.TaskStore, error) {
			return redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)), redisstore.WithHashTag(false))
		})
	})
	t.Run("hashtag=true", func(t *testing.T) {
		err := storetest.TestStore(ctx(t), func() (apcore.TaskStore, error) {
			return redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)), redisstore.WithHashTag(true))
		})
		require.NoError(t, err)
	})
	t.Run("layout=2", func(t *testing.T) {
		storetest.Run(t, func() (apcore.TaskStore, error) {
			return redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)), redisstore.WithLayout(2))
		})
	})
	t.Run("layout=2,hashtag=true", func(t *testing.T) {
		err := storetest.TestStore(ctx(t), func() (apcore.TaskStore, error) {
			return redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)), redisstore.WithHashTag(true), redisstore.WithLayout(2))
		})
		require.NoError(t, err)
	})
}

func TestTwoManagersShareOneStore(t *testing.T) {
	c := client(t)
	s, err := redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)))
	require.NoError(t, err)
	require.NoError(t, storetest.TestReplicas(ctx(t), s))
}

// Records are the protocol's JSON, under prefix + id, so other SDKs read them.
func TestRecordsAreTheWireFormat(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	done := time.Date(2024, 1, 2, 3, 4, 5, 678901000, time.UTC)
	require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{
		TaskID: "wire-1", ModuleID: "data.process_batch", Status: apcore.StatusCompleted,
		SubmittedAt: done.Add(-time.Second), StartedAt: done.Add(-time.Second), CompletedAt: done,
		Result: map[string]any{"processed": 42.0},
	}))
	assert.Equal(t, prefix+"wire-1", s.Key("wire-1"))
	raw, err := c.Get(ctx(t), prefix+"wire-1").Result()
	require.NoError(t, err)
	var wire map[string]any
	require.NoError(t, json.Unmarshal([]byte(raw), &wire))
	assert.Equal(t, "completed", wire["status"])
	assert.Equal(t, 1704164645.678901, wire["completed_at"])
	assert.Equal(t, map[string]any{"processed": 42.0}, wire["result"])
	assert.Nil(t, wire["error"])
	assert.Contains(t, wire, "retry_count")
}

// With a hash tag every key of the store is in one cluster slot.
func TestHashTagPutsEveryKeyInOneSlot(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix), redisstore.WithHashTag(true))
	require.NoError(t, err)
	for i, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusCompleted} {
		require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: fmt.Sprint("t", i), ModuleID: "a.b", Status: st,
			SubmittedAt: time.Now(), CompletedAt: time.Now()}))
	}
	// Every other kind of key: a resumable task's spec, priority and
	// queue, a unique key, a held task, a lease (and the layout version,
	// which New wrote).
	for i, owner := range []string{"", "m1"} {
		ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: apcore.TaskInfo{TaskID: fmt.Sprint("i", i), ModuleID: "a.b", Status: apcore.StatusPending,
			SubmittedAt: time.Now(), UniqueKey: fmt.Sprint("key", i), Priority: 3}, Owner: owner, Resumable: owner == "", Inputs: []byte(`{}`)}, 10)
		require.NoError(t, err)
		require.True(t, ok)
	}
	_, err = s.Renew(ctx(t), apcore.LeaseRequest{Owner: "m1", Expires: time.Now().Add(time.Minute), Create: true})
	require.NoError(t, err)
	keys, err := c.Keys(ctx(t), "*"+strings.TrimSuffix(prefix, ":")+"*").Result()
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(keys), 16, "%v", keys)
	tag := "{" + strings.TrimSuffix(prefix, ":") + "}"
	for _, k := range []string{"uniq", "ukey", "prio", "layout"} {
		assert.Contains(t, keys, tag+":_idx:"+k)
	}
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(k, tag), "key %q lacks the hash tag %q", k, tag)
		assert.Equal(t, slot(tag[1:len(tag)-1]), slot(hashed(k)), k)
	}
}

// hashed is the part of a key Redis Cluster hashes: the first {...}.
func hashed(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

// slot is Redis Cluster's key slot: CRC16 (XMODEM) mod 16384.
func slot(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for b := 0; b < 8; b++ {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % 16384
}

// The indexes always agree with the records, however writes interleave:
// each write is one script.
func TestIndexesAgreeWithRecords(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	states := []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				id := fmt.Sprintf("ix-%d", (w*7+i)%40)
				st := states[(w+i)%len(states)]
				info := apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: st, SubmittedAt: time.Now(), CompletedAt: time.Now()}
				switch i % 4 {
				case 0:
					assert.NoError(t, s.Delete(ctx(t), id))
				case 1:
					_, err := s.SaveIf(ctx(t), info, apcore.StatusPending, apcore.StatusRunning)
					assert.NoError(t, err)
				default:
					assert.NoError(t, s.Save(ctx(t), info))
				}
			}
		}(w)
	}
	wg.Wait()
	all, err := s.List(ctx(t), "")
	require.NoError(t, err)
	total, err := s.Count(ctx(t))
	require.NoError(t, err)
	assert.Equal(t, len(all), total)
	for _, st := range states {
		listed, err := s.List(ctx(t), st)
		require.NoError(t, err)
		n, err := s.Count(ctx(t), st)
		require.NoError(t, err)
		assert.Equal(t, len(listed), n, st)
		for _, info := range listed {
			assert.Equal(t, st, info.Status)
		}
	}
	expired, err := s.ListExpired(ctx(t), time.Now().Add(time.Hour))
	require.NoError(t, err)
	for _, info := range expired {
		assert.True(t, info.Status.IsTerminal())
	}
	records, err := c.Keys(ctx(t), prefix+"ix-*").Result()
	require.NoError(t, err)
	assert.Len(t, records, total, "a record key for every indexed task, and no more")
}

// New checks that Redis answers: with no server at the address, or one
// that does not answer (behind a paused proxy), it fails with
// TASK_STORE_UNAVAILABLE naming the address, the second within
// PingTimeout. A store whose server goes away fails its calls so too.
func TestNewChecksThatRedisAnswers(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: time.Second, MaxRetries: -1})
	defer c.Close()
	_, err := redisstore.New(c)
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	assert.Contains(t, err.Error(), "redisstore.New: redis at 127.0.0.1:1 does not answer: ")
	var ae *apcore.Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, apcore.CodeTaskStoreUnavailable, ae.Code)

	opts, err := redis.ParseURL(os.Getenv("APCORE_TEST_REDIS"))
	require.NoError(t, err)
	p := newProxy(t, opts.Addr)
	p.pause()
	silent := redis.NewClient(&redis.Options{Addr: p.addr(), MaxRetries: -1, DialerRetries: 1})
	defer silent.Close()
	start := time.Now()
	_, err = redisstore.New(silent)
	took := time.Since(start)
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	assert.Contains(t, err.Error(), "redisstore.New: redis at "+p.addr()+" does not answer: ")
	assert.Less(t, took, redisstore.PingTimeout+2*time.Second, "New waited past PingTimeout")

	p.unpause()
	s, err := redisstore.New(silent, redisstore.WithPrefix(freshPrefix(t, client(t))))
	require.NoError(t, err, "New through the proxy once it forwards")
	p.close() // the server goes away
	_, err = s.Get(ctx(t), "x")
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	err = s.Save(ctx(t), apcore.TaskInfo{TaskID: "x", ModuleID: "a.b", Status: apcore.StatusPending})
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	_, err = s.Count(ctx(t), apcore.StatusPending)
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
	_, err = s.List(ctx(t), "")
	require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
}

func TestBadInput(t *testing.T) {
	c := client(t)
	_, err := redisstore.New(nil)
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = redisstore.New(c, redisstore.WithPrefix(""))
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = redisstore.New(c, redisstore.WithPrefix("a{b}"))
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = redisstore.New(c, nil)
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	s, err := redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)))
	require.NoError(t, err)
	assert.Equal(t, "RedisTaskStore", s.Name())
	err = s.Save(ctx(t), apcore.TaskInfo{TaskID: "_idx:order", Status: apcore.StatusPending})
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = s.Get(ctx(t), "_idx:order")
	assert.ErrorIs(t, err, apcore.ErrTaskNotFound)
	err = s.Save(ctx(t), apcore.TaskInfo{TaskID: "x", Status: apcore.StatusCompleted, Result: make(chan int)})
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = s.List(ctx(t), "nope")
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	_, err = s.Count(ctx(t), "nope")
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
}

// go test -run '^$' -bench . -benchtime 1x: 10,000 no-op tasks.
func BenchmarkManagerRedis(b *testing.B) {
	c := client(b)
	storetest.BenchmarkManager(b, func() (apcore.TaskStore, error) {
		return redisstore.New(c, redisstore.WithPrefix(freshPrefix(b, c)))
	}, 10_000)
}

// go test -run '^$' -bench ManagerDirect -benchtime 1x: 10,000 no-op tasks
// through a manager straight over the store (max_concurrent 100, one
// submitter), with the Redis commands per task from INFO commandstats
// (the server must serve nothing else meanwhile) and the scripts run per
// task (EVALSHA: one round trip each).
func BenchmarkManagerDirect(b *testing.B) {
	const tasks = 10_000
	c := client(b)
	reg := apcore.NewRegistry()
	require.NoError(b, reg.Register("bench.noop", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) { return nil, nil })))
	var elapsed time.Duration
	var cmds, scripts int64
	for b.Loop() {
		b.StopTimer()
		s, err := redisstore.New(c, redisstore.WithPrefix(freshPrefix(b, c)))
		require.NoError(b, err)
		m, err := apcore.NewTaskManager(reg, apcore.WithStore(s), apcore.WithMaxConcurrent(100), apcore.WithMaxTasks(tasks+10))
		require.NoError(b, err)
		before := commandStats(b, c)
		start := time.Now()
		b.StartTimer()
		ids := make([]string, tasks)
		for i := range ids {
			if ids[i], err = m.Submit(context.Background(), "bench.noop", nil); err != nil {
				b.Fatal(err)
			}
		}
		for _, id := range ids {
			if info, err := m.Wait(context.Background(), id); err != nil || info.Status != apcore.StatusCompleted {
				b.Fatalf("task %s: %s %v", id, info.Status, err)
			}
		}
		b.StopTimer()
		elapsed += time.Since(start)
		after := commandStats(b, c)
		require.NoError(b, m.Shutdown(context.Background()))
		for k, v := range after {
			if k != "info" {
				cmds += v - before[k]
			}
		}
		scripts += after["evalsha"] + after["eval"] - before["evalsha"] - before["eval"]
		b.StartTimer()
	}
	total := float64(b.N * tasks)
	b.ReportMetric(total/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(cmds)/total, "cmds/task")
	b.ReportMetric(float64(scripts)/total, "scripts/task")
}

// commandStats reads the server's calls per command.
func commandStats(t testing.TB, c *redis.Client) map[string]int64 {
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	out := map[string]int64{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		var calls int64
		if _, err := fmt.Sscanf(rest, "calls=%d", &calls); err == nil {
			out[strings.TrimPrefix(name, "cmdstat_")] = calls
		}
	}
	return out
}

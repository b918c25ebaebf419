package redisstore_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// serverCPU is the CPU time the Redis server c talks to has used, when it
// runs on this machine (its pid from INFO, its times from /proc), or -1.
func serverCPU(t testing.TB, c *redis.Client) time.Duration {
	t.Helper()
	info, err := c.Info(context.Background(), "server").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\n") {
		pid, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:")
		if !ok {
			continue
		}
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		if err != nil {
			return -1
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	return -1
}

// BenchmarkTaskWrites is the store's share of a task that its manager runs
// (not resumable): Insert, Update to running, Update to completed, from
// parallel goroutines. It reports the Redis server's CPU per task.
func BenchmarkTaskWrites(b *testing.B) {
	benchTaskWrites(b, false)
}

// BenchmarkResumableWrites is a resumable task: Insert with its spec, a
// Claim of it, Update to completed.
func BenchmarkResumableWrites(b *testing.B) {
	benchTaskWrites(b, true)
}

func benchTaskWrites(b *testing.B, resumable bool) {
	s, c := store(b)
	ctx := context.Background()
	owner := "bench-owner"
	_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: owner, Expires: time.Now().Add(time.Hour), Create: true})
	require.NoError(b, err)
	inputs := []byte(`{"n":1}`)
	var claimed atomic.Int64
	cpu0 := serverCPU(b, c)
	b.ResetTimer()
	b.SetParallelism(50) // 100 goroutines on 2 cores, as many as the durable benchmark's workers
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			now := time.Now()
			info := apcore.TaskInfo{TaskID: uuid.NewString(), ModuleID: "bench.noop", Status: apcore.StatusPending, SubmittedAt: now}
			st := apcore.StoredTask{Info: info, Owner: owner}
			if resumable {
				st.Owner, st.Resumable, st.Inputs = "", true, inputs
			}
			ok, err := s.Insert(ctx, st, 1<<30)
			if err != nil || !ok {
				b.Fatalf("insert: %v %v", ok, err)
			}
			if resumable {
				got, err := s.Claim(ctx, apcore.ClaimRequest{Owner: owner, Limit: 1, Now: time.Now()})
				if err != nil {
					b.Fatal(err)
				}
				if len(got) == 0 {
					continue // another goroutine claimed it; this one ends a task it claims later
				}
				st = got[0]
				claimed.Add(1)
			} else {
				st.Info.Status, st.Info.StartedAt = apcore.StatusRunning, time.Now()
				if ok, err := s.Update(ctx, st, owner); err != nil || !ok {
					b.Fatalf("update to running: %v %v", ok, err)
				}
			}
			st.Info.Status, st.Info.CompletedAt = apcore.StatusCompleted, time.Now()
			if ok, err := s.Update(ctx, st, owner); err != nil || !ok {
				b.Fatalf("update to completed: %v %v", ok, err)
			}
		}
	})
	b.StopTimer()
	if cpu := serverCPU(b, c); cpu0 >= 0 && cpu >= 0 {
		b.ReportMetric(float64((cpu-cpu0).Microseconds())/float64(b.N), "server-µs/task")
	}
}

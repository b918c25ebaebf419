package redisstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
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

// BenchmarkTaskWritesLayout2 is BenchmarkTaskWrites in layout 2.
func BenchmarkTaskWritesLayout2(b *testing.B) {
	benchTaskWrites(b, false, redisstore.WithLayout(2))
}

// BenchmarkResumableWrites is a resumable task: Insert with its spec, a
// Claim of it, Update to completed.
func BenchmarkResumableWrites(b *testing.B) {
	benchTaskWrites(b, true)
}

// BenchmarkResumableWritesLayout2 is BenchmarkResumableWrites in layout 2.
func BenchmarkResumableWritesLayout2(b *testing.B) {
	benchTaskWrites(b, true, redisstore.WithLayout(2))
}

func benchTaskWrites(b *testing.B, resumable bool, opts ...redisstore.Option) {
	s, c := store(b, opts...)
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

// benchScale is the record counts BenchmarkScale fills the store with:
// $APCORE_BENCH_RECORDS (comma-separated), 10,000 by default; issue #17's
// figures are for "10000,1000000".
func benchScale(b *testing.B) []int {
	spec := os.Getenv("APCORE_BENCH_RECORDS")
	if spec == "" {
		return []int{10_000}
	}
	var out []int
	for f := range strings.SplitSeq(spec, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1000 {
			b.Fatalf("APCORE_BENCH_RECORDS=%q: want counts of at least 1000, comma-separated", spec)
		}
		out = append(out, n)
	}
	return out
}

// fill writes n records in the store's own layout (1 or 2), by pipelines from
// parallel goroutines: completed, but every hundredth failed, submitted a
// millisecond apart from start and ended a second after. It returns the
// records' insertion sequence numbers' first value.
func fill(b *testing.B, s *redisstore.Store, c *redis.Client, n int, start time.Time) int64 {
	b.Helper()
	ctx := context.Background()
	idx := s.Key("_idx:")
	layout2 := c.Get(ctx, idx+"layout").Val() == "2"
	last, err := c.IncrBy(ctx, idx+"seq", int64(n)).Result()
	require.NoError(b, err)
	first := last - int64(n) + 1
	const batch, workers = 1000, 4
	var next atomic.Int64
	errs := make(chan error, workers)
	for range workers {
		go func() {
			for {
				from := next.Add(batch) - batch
				if from >= int64(n) {
					errs <- nil
					return
				}
				pipe := c.Pipeline()
				for i := from; i < min(from+batch, int64(n)); i++ {
					st := apcore.StatusCompleted
					if i%100 == 99 {
						st = apcore.StatusFailed
					}
					sub := start.Add(time.Duration(i) * time.Millisecond)
					info := apcore.TaskInfo{TaskID: uuid.NewString(), ModuleID: "bench.noop", Status: st,
						SubmittedAt: sub, StartedAt: sub, CompletedAt: sub.Add(time.Second), MaxRetries: 3}
					data, err := json.Marshal(info)
					if err != nil {
						errs <- err
						return
					}
					seq := strconv.FormatInt(first+i, 10)
					done := float64(info.CompletedAt.UnixMicro())
					if !layout2 {
						pipe.Set(ctx, s.Key(info.TaskID), data, 0)
						pipe.ZAdd(ctx, idx+"order", redis.Z{Score: float64(first + i), Member: info.TaskID})
						pipe.HSet(ctx, idx+"meta", info.TaskID, string(st)+"|"+seq+"|||")
						pipe.ZAdd(ctx, idx+"status:"+string(st), redis.Z{Score: done, Member: info.TaskID})
						continue
					}
					// Layout 2 (see layout2.go): the record carries its
					// sequence number; buckets of 128, their directories
					// and the counts.
					bucket := strconv.FormatInt((first+i)/128, 10)
					pipe.Set(ctx, s.Key(info.TaskID), append(data[:len(data)-1], `,"_seq":`+seq+`}`...), 0)
					pipe.ZAdd(ctx, idx+"o:"+bucket, redis.Z{Score: float64(first + i), Member: info.TaskID})
					pipe.ZAddNX(ctx, idx+"o", redis.Z{Score: float64((first + i) / 128), Member: bucket})
					pipe.ZAdd(ctx, idx+"d:"+string(st)+":"+bucket, redis.Z{Score: done, Member: seq})
					pipe.ZAddArgs(ctx, idx+"d:"+string(st), redis.ZAddArgs{LT: true, Members: []redis.Z{{Score: done, Member: bucket}}})
					pipe.HIncrBy(ctx, idx+"n", "all", 1)
					pipe.HIncrBy(ctx, idx+"n", string(st), 1)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range workers {
		require.NoError(b, <-errs)
	}
	return first
}

// slowLog watches the longest commands and scripts of a server.
type slowLog struct {
	b       *testing.B
	c       *redis.Client
	old     map[string]string
	longest time.Duration
	over10  int // entries of 10 ms or more
}

// watchSlowLog makes the server c talks to log every command or script
// that runs 1 ms or longer, when it is a throwaway server of
// scripts/services.sh; nil when it is not.
func watchSlowLog(b *testing.B, c *redis.Client) *slowLog {
	b.Helper()
	ctx := context.Background()
	dir, err := c.ConfigGet(ctx, "dir").Result()
	require.NoError(b, err)
	if !strings.Contains(dir["dir"], "/apcore-services.") {
		return nil
	}
	old, err := c.ConfigGet(ctx, "slowlog-*").Result()
	require.NoError(b, err)
	require.NoError(b, c.ConfigSet(ctx, "slowlog-log-slower-than", "1000").Err())
	require.NoError(b, c.ConfigSet(ctx, "slowlog-max-len", "100000").Err())
	require.NoError(b, c.SlowLogReset(ctx).Err())
	return &slowLog{b: b, c: c, old: old}
}

// take notes the longest entry logged since the last take, if it is the
// longest yet, and empties the log.
func (l *slowLog) take() {
	if l == nil {
		return
	}
	ctx := context.Background()
	logs, err := l.c.SlowLogGet(ctx, -1).Result()
	require.NoError(l.b, err)
	for _, e := range logs {
		l.longest = max(l.longest, e.Duration)
		if e.Duration >= 10*time.Millisecond {
			l.over10++
			cmd := fmt.Sprint(e.Args)
			l.b.Logf("slow log: %v %.60s", e.Duration, cmd)
		}
	}
	require.NoError(l.b, l.c.SlowLogReset(ctx).Err())
}

// skip empties the log, leaving out what it holds.
func (l *slowLog) skip() {
	if l != nil {
		require.NoError(l.b, l.c.SlowLogReset(context.Background()).Err())
	}
}

// report takes the log, reports the longest entry as slowlog-ms (0: none
// of 1 ms or more) and sets the server's slow log back as it was.
func (l *slowLog) report() {
	if l == nil {
		return
	}
	l.take()
	l.b.ReportMetric(float64(l.longest)/1e6, "slowlog-ms")
	l.b.ReportMetric(float64(l.over10), "slowlog-over-10ms")
	for k, v := range l.old {
		require.NoError(l.b, l.c.ConfigSet(context.Background(), k, v).Err())
	}
}

// BenchmarkScale fills a store of each layout with each count of benchScale and measures
// what issue #17 asks at that size: a page from the middle (100 of every
// record, newest first too; 20 of the failed ones, one in a hundred), List
// of the failed and of the completed ones, ListExpired of the oldest
// thousand, and Sweep of every record with the manager's batches of 1000
// (records/s, and the server's CPU per record). Those that read or delete
// much report the longest command or script the server logged meanwhile
// (slowlog-ms; 0: none of 1 ms or more) and how many took 10 ms or more.
// The slow log measures wall time: on a busy machine a descheduled server
// logs single-key commands of 10 ms and more.
func BenchmarkScale(b *testing.B) {
	for _, layout := range []int{1, 2} {
		b.Run(fmt.Sprint("layout=", layout), func(b *testing.B) { benchScaleLayout(b, layout) })
	}
}

func benchScaleLayout(b *testing.B, layout int) {
	for _, n := range benchScale(b) {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			s, c := store(b, redisstore.WithLayout(layout))
			ctx := context.Background()
			start := time.Unix(1_700_000_000, 0)
			t0 := time.Now()
			first := fill(b, s, c, n, start)
			b.Logf("filled %d records in %v", n, time.Since(t0).Round(time.Millisecond))
			total, err := s.Count(ctx)
			require.NoError(b, err)
			require.Equal(b, n, total)
			mid := "s" + strconv.FormatInt(first+int64(n)/2, 10)
			for _, p := range []struct {
				name string
				opts apcore.ListOptions
			}{
				{"ListPage", apcore.ListOptions{Limit: 100, After: mid}},
				{"ListPage-newest", apcore.ListOptions{Limit: 100, After: mid, Newest: true}},
				{"ListPage-failed", apcore.ListOptions{Limit: 20, After: mid, Status: apcore.StatusFailed}},
			} {
				b.Run(p.name, func(b *testing.B) {
					for b.Loop() {
						page, err := s.ListPage(ctx, p.opts)
						if err != nil || len(page.Tasks) != p.opts.Limit || page.Next == "" {
							b.Fatalf("ListPage(%+v): %d records, next %q, %v", p.opts, len(page.Tasks), page.Next, err)
						}
					}
				})
			}
			for _, st := range []apcore.TaskStatus{apcore.StatusFailed, apcore.StatusCompleted} {
				b.Run("List-"+string(st), func(b *testing.B) {
					sl := watchSlowLog(b, c)
					want := n / 100
					if st == apcore.StatusCompleted {
						want = n - n/100
					}
					for b.Loop() {
						got, err := s.List(ctx, st)
						if err != nil || len(got) != want {
							b.Fatalf("List(%s): %d records, %v", st, len(got), err)
						}
					}
					sl.report()
				})
			}
			b.Run("ListExpired", func(b *testing.B) {
				sl := watchSlowLog(b, c)
				for b.Loop() {
					got, err := s.ListExpired(ctx, start.Add(time.Second+1000*time.Millisecond))
					if err != nil || len(got) != 1000 {
						b.Fatalf("ListExpired: %d records, %v", len(got), err)
					}
				}
				sl.report()
			})
			// Each round sweeps every record, filled again (untimed) when a
			// round before swept them.
			b.Run("Sweep", func(b *testing.B) {
				sl := watchSlowLog(b, c)
				before := start.Add(time.Duration(n)*time.Millisecond + 2*time.Second)
				var cpu time.Duration // the server's, sweeping
				for range b.N {
					if left, err := s.Count(ctx); err != nil || left == 0 {
						require.NoError(b, err)
						b.StopTimer()
						sl.take()
						fill(b, s, c, n, start)
						sl.skip() // not the fill's
						b.StartTimer()
					}
					cpu0 := serverCPU(b, c)
					swept := 0
					for {
						k, err := s.Sweep(ctx, apcore.SweepRequest{Before: before, Limit: 1000})
						require.NoError(b, err)
						swept += k
						if k < 1000 {
							break
						}
					}
					require.Equal(b, n, swept)
					if cpu1 := serverCPU(b, c); cpu0 >= 0 && cpu1 >= 0 && cpu >= 0 {
						cpu += cpu1 - cpu0
					} else {
						cpu = -1
					}
				}
				b.StopTimer()
				left, err := s.Count(ctx)
				require.NoError(b, err)
				require.Zero(b, left)
				b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
				if cpu >= 0 {
					b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(n*b.N), "server-µs/record")
				}
				sl.report()
			})
		})
	}
}

// usedMemory is the server's used_memory (INFO memory).
func usedMemory(b *testing.B, c *redis.Client) int64 {
	b.Helper()
	info, err := c.Info(context.Background(), "memory").Result()
	require.NoError(b, err)
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			require.NoError(b, err)
			return n
		}
	}
	b.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkKeptBytes is what Redis keeps per completed record, in each
// layout: 20,000 tasks inserted, run and completed as a manager writes
// them (a uuid id, no result), measured by the server's used_memory
// before and after (B/record; other clients' writes meanwhile count too),
// and by MEMORY USAGE of one record and of each index (record-B, order-B,
// meta-B, done-B: per record; in layout 2 the sum of the buckets). MEMORY
// USAGE leaves out the server's own entry for each key, about 50 bytes for
// a record.
func BenchmarkKeptBytes(b *testing.B) {
	for _, layout := range []int{1, 2} {
		b.Run(fmt.Sprint("layout=", layout), func(b *testing.B) { benchKeptBytes(b, layout) })
	}
}

func benchKeptBytes(b *testing.B, layout int) {
	const n = 20_000
	for range b.N {
		s, c := store(b, redisstore.WithLayout(layout))
		ctx := context.Background()
		owner := "replica-1"
		_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: owner, Expires: time.Now().Add(time.Hour), Create: true})
		require.NoError(b, err)
		before := usedMemory(b, c)
		var next atomic.Int64
		errs := make(chan error, 16)
		for range cap(errs) {
			go func() {
				for next.Add(1) <= n {
					info := apcore.TaskInfo{TaskID: uuid.NewString(), ModuleID: "bench.noop", Status: apcore.StatusPending, SubmittedAt: time.Now(), MaxRetries: 3}
					st := apcore.StoredTask{Info: info, Owner: owner}
					if ok, err := s.Insert(ctx, st, 1<<30); err != nil || !ok {
						errs <- fmt.Errorf("insert: %v %v", ok, err)
						return
					}
					st.Info.Status, st.Info.StartedAt = apcore.StatusRunning, time.Now()
					if ok, err := s.Update(ctx, st, owner); err != nil || !ok {
						errs <- fmt.Errorf("update: %v %v", ok, err)
						return
					}
					st.Info.Status, st.Info.CompletedAt = apcore.StatusCompleted, time.Now()
					if ok, err := s.Update(ctx, st, owner); err != nil || !ok {
						errs <- fmt.Errorf("update: %v %v", ok, err)
						return
					}
				}
				errs <- nil
			}()
		}
		for range cap(errs) {
			require.NoError(b, <-errs)
		}
		b.ReportMetric(float64(usedMemory(b, c)-before)/n, "B/record")
		page, err := s.ListPage(ctx, apcore.ListOptions{Limit: 1})
		require.NoError(b, err)
		require.Len(b, page.Tasks, 1)
		// usage is the MEMORY USAGE of the keys matching pattern, summed.
		usage := func(pattern string) float64 {
			keys, err := c.Keys(ctx, pattern).Result()
			require.NoError(b, err)
			sum := int64(0)
			for _, k := range keys {
				m, err := c.MemoryUsage(ctx, k, 0).Result()
				require.NoError(b, err)
				sum += m
			}
			return float64(sum)
		}
		idx := s.Key("_idx:")
		b.ReportMetric(usage(s.Key(page.Tasks[0].TaskID)), "record-B")
		b.ReportMetric(usage(idx+"meta")/n, "meta-B")
		if layout == 1 {
			b.ReportMetric(usage(idx+"order")/n, "order-B")
			b.ReportMetric(usage(idx+"status:completed")/n, "done-B")
		} else {
			b.ReportMetric(usage(idx+"o*")/n, "order-B")
			b.ReportMetric(usage(idx+"d:completed*")/n, "done-B")
		}
	}
}

// BenchmarkMigrate fills a store of layout 1 with each count of
// benchScale and moves it to layout 2 with Migrate: records/s, the
// server's CPU per record, the longest script the server logged meanwhile
// (slowlog-ms) and the bytes per record before and after (before-B,
// after-B: used_memory less that of the empty store, per record).
func BenchmarkMigrate(b *testing.B) {
	for _, n := range benchScale(b) {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			ctx := context.Background()
			for range b.N {
				b.StopTimer()
				s, c := store(b)
				prefix := strings.TrimSuffix(s.Key("x"), "x")
				empty := usedMemory(b, c)
				fill(b, s, c, n, time.Unix(1_700_000_000, 0))
				filled := usedMemory(b, c)
				sl := watchSlowLog(b, c)
				cpu0 := serverCPU(b, c)
				b.StartTimer()
				require.NoError(b, redisstore.Migrate(ctx, c, redisstore.WithPrefix(prefix)))
				b.StopTimer()
				if cpu1 := serverCPU(b, c); cpu0 >= 0 && cpu1 >= 0 {
					b.ReportMetric(float64((cpu1-cpu0).Microseconds())/float64(n), "server-µs/record")
				}
				sl.report()
				b.ReportMetric(float64(filled-empty)/float64(n), "before-B")
				b.ReportMetric(float64(usedMemory(b, c)-empty)/float64(n), "after-B")
				total, err := s.Count(ctx)
				require.NoError(b, err)
				require.Equal(b, n, total)
				b.StartTimer()
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

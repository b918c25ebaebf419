package redisstore_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// scriptStats is the server's calls of EVALSHA and the microseconds it
// spent in them (INFO commandstats): the scripts' own cost, without the
// round trip.
func scriptStats(t testing.TB, c *redis.Client) (calls, usec int64) {
	info, err := c.Info(context.Background(), "commandstats").Result()
	require.NoError(t, err)
	for line := range strings.SplitSeq(info, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_evalsha:"); ok {
			_, err := fmt.Sscanf(rest, "calls=%d,usec=%d", &calls, &usec)
			require.NoError(t, err)
		}
	}
	return calls, usec
}

// insertMany inserts n records from 32 goroutines: resumable and held by
// no one when notBefore is set (then due at notBefore), each with a unique
// key when keyed.
func insertMany(b *testing.B, s *redisstore.Store, n int, prefix string, keyed bool, notBefore time.Time) {
	b.Helper()
	var wg sync.WaitGroup
	const workers = 32
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				id := fmt.Sprint(prefix, i)
				st := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "bench.noop", Status: apcore.StatusPending, SubmittedAt: time.Now()},
					Owner: "bench-owner"}
				if keyed {
					st.Info.UniqueKey = "key-" + id
				}
				if !notBefore.IsZero() {
					st.Owner, st.Resumable, st.Inputs, st.NotBefore = "", true, []byte(`{}`), notBefore
				}
				if ok, err := s.Insert(context.Background(), st, 1<<30); err != nil || !ok {
					b.Errorf("insert %s: %v %v", id, ok, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if b.Failed() {
		b.FailNow()
	}
}

// BenchmarkInsertUniqueKey compares an Insert with a unique key (and its
// lookup) with a plain Insert, and with an Insert that finds a duplicate,
// over a store that holds 100,000 records with unique keys already: one
// goroutine, 500 Inserts of each kind in turn, 10,000 of each an
// iteration (go test -run '^$' -bench InsertUniqueKey -benchtime 1x). It
// reports each kind's time per Insert seen by the client (a round trip
// on loopback) and by the server (EVALSHA's usec in INFO commandstats),
// and the ratios of unique to plain.
func BenchmarkInsertUniqueKey(b *testing.B) {
	s, c := store(b)
	insertMany(b, s, 100_000, "held-", true, time.Time{})
	const per, block = 10_000, 500
	kinds := []string{"plain", "unique", "duplicate"}
	wall := map[string]time.Duration{}
	server := map[string]int64{}
	n := 0
	for b.Loop() {
		for start := 0; start < per; start += block {
			for _, kind := range kinds {
				calls0, usec0 := scriptStats(b, c)
				t0 := time.Now()
				for i := start; i < start+block; i++ {
					id := fmt.Sprintf("%s-%d-%d", kind, n, i)
					st := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "bench.noop", Status: apcore.StatusPending, SubmittedAt: time.Now()},
						Owner: "bench-owner"}
					switch kind {
					case "unique":
						st.Info.UniqueKey = "key-" + id
					case "duplicate":
						st.Info.UniqueKey = fmt.Sprint("key-held-", i)
					}
					ok, err := s.Insert(context.Background(), st, 1<<30)
					if kind == "duplicate" {
						if ok || err == nil {
							b.Fatalf("insert %s: %v %v, want a duplicate", id, ok, err)
						}
					} else if err != nil || !ok {
						b.Fatalf("insert %s: %v %v", id, ok, err)
					}
				}
				wall[kind] += time.Since(t0)
				calls, usec := scriptStats(b, c)
				if calls-calls0 != block {
					b.Fatalf("%d scripts ran during %d Inserts: the server must serve nothing else", calls-calls0, block)
				}
				server[kind] += usec - usec0
			}
		}
		n++
	}
	total := float64(n * per)
	for _, kind := range kinds {
		b.ReportMetric(float64(wall[kind].Microseconds())/total, kind+"-µs/insert")
		b.ReportMetric(float64(server[kind])/total, kind+"-server-µs/insert")
	}
	b.ReportMetric(float64(wall["unique"])/float64(wall["plain"]), "unique/plain")
	b.ReportMetric(float64(server["unique"])/float64(server["plain"]), "unique/plain-server")
}

// BenchmarkClaimWithScheduledWaiting is the cost of a Claim of one due
// task while 0, or $APCORE_BENCH_SCHEDULED (100,000 by default),
// scheduled resumable tasks wait in "later", due in an hour: each
// iteration inserts one task due now and claims it
// (go test -run '^$' -bench ClaimWithScheduled). It reports the Claim's
// time seen by the client and by the server (EVALSHA's usec), and checks
// that every scheduled task still waits.
func BenchmarkClaimWithScheduledWaiting(b *testing.B) {
	waiting := 100_000
	if v := os.Getenv("APCORE_BENCH_SCHEDULED"); v != "" {
		var err error
		if waiting, err = strconv.Atoi(v); err != nil {
			b.Fatalf("APCORE_BENCH_SCHEDULED=%q: %v", v, err)
		}
	}
	for _, n := range []int{0, waiting} {
		b.Run(fmt.Sprint("waiting=", n), func(b *testing.B) {
			s, c := store(b)
			ctx := context.Background()
			_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: "bench-owner", Expires: time.Now().Add(2 * time.Hour), Create: true})
			require.NoError(b, err)
			insertMany(b, s, n, "later-", false, time.Now().Add(time.Hour))
			var wall time.Duration
			var usec int64
			i := 0
			for b.Loop() {
				st := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: fmt.Sprint("now-", i), ModuleID: "bench.noop", Status: apcore.StatusPending,
					SubmittedAt: time.Now(), Priority: i % 3}, Resumable: true, Inputs: []byte(`{}`)}
				i++
				if ok, err := s.Insert(ctx, st, 1<<30); err != nil || !ok {
					b.Fatalf("insert: %v %v", ok, err)
				}
				_, usec0 := scriptStats(b, c)
				t0 := time.Now()
				got, err := s.Claim(ctx, apcore.ClaimRequest{Owner: "bench-owner", Limit: 1, Now: time.Now()})
				wall += time.Since(t0)
				_, usec1 := scriptStats(b, c)
				usec += usec1 - usec0
				if err != nil || len(got) != 1 {
					b.Fatalf("claim: %d tasks, %v", len(got), err)
				}
			}
			b.ReportMetric(float64(wall.Nanoseconds())/1e3/float64(i), "claim-µs")
			b.ReportMetric(float64(usec)/float64(i), "claim-server-µs")
			later, err := c.ZCard(ctx, strings.TrimSuffix(s.Key("x"), "x")+"_idx:later").Result()
			require.NoError(b, err)
			require.EqualValues(b, n, later, "the scheduled tasks wait in later")
		})
	}
}

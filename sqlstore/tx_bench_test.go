package sqlstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// txPair opens two stores on one fresh table, each on a pool of its own:
// the application's process and a worker's.
type txPair func(tb testing.TB) (app, worker *sqlstore.Store)

var txPairs = []struct {
	name string
	open txPair
}{
	{"PostgreSQL", func(tb testing.TB) (*sqlstore.Store, *sqlstore.Store) {
		s, _, table := openPostgresStore(tb)
		w, err := sqlstore.New(ctx(tb), postgres(tb), sqlstore.PostgreSQL, sqlstore.WithTable(table))
		require.NoError(tb, err)
		tb.Cleanup(func() { w.Close() })
		return s, w
	}},
	{"SQLite", func(tb testing.TB) (*sqlstore.Store, *sqlstore.Store) {
		path := filepath.Join(tb.TempDir(), "tx.db")
		open := func() *sqlstore.Store {
			s, err := sqlstore.New(ctx(tb), openSQLite(tb, path), sqlstore.SQLite)
			require.NoError(tb, err)
			tb.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open()
	}},
}

// commitToStart submits n tasks WithTx one after another, each in a
// transaction of its own on the application's store, with two idle
// managers (the application's and a worker's) over the table, and returns
// for each the time from the return of tx.Commit to the start of its
// module, whichever manager runs it. A pause of 0-250 ms before each
// spreads the commits over the managers' poll cycle (200 ms), as commits
// at random would be: without it each commit would follow the last start
// by the same little, at the same point of the cycle.
func commitToStart(tb testing.TB, open txPair, n int) []time.Duration {
	app, worker := open(tb)
	type start struct {
		id string
		at time.Time
	}
	started := make(chan start, n)
	reg := apcore.NewRegistry()
	require.NoError(tb, reg.Register("tx.latency", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		info, _ := apcore.TaskFromContext(ctx)
		started <- start{info.TaskID, time.Now()}
		return nil, nil
	})))
	ca, cw := &claimCounter{Store: app}, &claimCounter{Store: worker}
	m := manager(tb, reg, ca)
	manager(tb, reg, cw)
	require.Eventually(tb, func() bool { return ca.claims.Load() > 0 && cw.claims.Load() > 0 }, 30*time.Second, time.Millisecond)
	db := sqlstore.DBForTest(app)
	out := make([]time.Duration, 0, n)
	for range n {
		time.Sleep(time.Duration(rand.IntN(250_000)) * time.Microsecond)
		tx, err := db.BeginTx(ctx(tb), nil)
		require.NoError(tb, err)
		id, err := m.Submit(ctx(tb), "tx.latency", map[string]any{"order": 1}, apcore.WithTx(tx))
		require.NoError(tb, err)
		require.NoError(tb, tx.Commit())
		committed := time.Now()
		select {
		case s := <-started:
			require.Equal(tb, id, s.id)
			out = append(out, s.at.Sub(committed))
		case <-time.After(30 * time.Second):
			tb.Fatalf("task %s did not start within 30s of its commit", id)
		}
	}
	return out
}

// quantile returns the q-quantile of ds (nearest rank), sorting them.
func quantile(ds []time.Duration, q float64) time.Duration {
	slices.Sort(ds)
	i := int(float64(len(ds))*q+0.5) - 1
	return ds[max(0, min(i, len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// TestTxCommitToStart runs a few tasks of the benchmark below on each
// store and reports their latency; it checks only that each starts (within
// 30 s): timing is the benchmark's to measure.
func TestTxCommitToStart(t *testing.T) {
	for _, p := range txPairs {
		t.Run(p.name, func(t *testing.T) {
			lat := commitToStart(t, p.open, 20)
			t.Logf("%s: commit to start over %d tasks: p50 %.1f ms, max %.1f ms", p.name, len(lat), ms(quantile(lat, 0.5)), ms(quantile(lat, 1)))
		})
	}
}

// BenchmarkTxCommitToStart measures the time from a WithTx task's commit to
// its start on an idle manager (see commitToStart), one task per
// iteration, and reports its p50, p99 and max: on PostgreSQL the commit's
// NOTIFY wakes the managers' claimers, on SQLite they find the task at
// their next poll (every 200 ms). Measured on 2 shared cores (PostgreSQL
// 15, SQLite through modernc in WAL mode), 200 tasks each: see the README's
// "Transactional submit".
//
//	go test -run '^$' -bench TxCommitToStart -benchtime 200x
func BenchmarkTxCommitToStart(b *testing.B) {
	for _, p := range txPairs {
		b.Run(p.name, func(b *testing.B) {
			lat := commitToStart(b, p.open, b.N)
			b.ReportMetric(ms(quantile(lat, 0.5)), "p50-ms")
			b.ReportMetric(ms(quantile(lat, 0.99)), "p99-ms")
			b.ReportMetric(ms(quantile(lat, 1)), "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkTxHoldingCountRows measures, on PostgreSQL, what a transaction
// that inserted a task WithTx and stays open for a second (hold) costs the
// others. Meanwhile 8 submitters insert tasks one after another (plain
// Insert, on the Store's pool) for that second, and 64 running tasks end
// at once, each on a goroutine of its own. It reports the inserts done
// while the transaction was open, those that waited for it (half the hold
// or more) and the share of the ends that waited. "none": no transaction,
// for comparison; "one-row": the transaction's insert locked its task's
// count row, one of 16; "all-rows": that insert had to share the cap out
// anew (its limit differs from the last one's), which locks all 16.
//
//	go test -run '^$' -bench TxHoldingCountRows -benchtime 1x
func BenchmarkTxHoldingCountRows(b *testing.B) {
	const (
		hold       = time.Second
		submitters = 8
		ends       = 64
		limit      = 100_000
	)
	for _, sc := range []string{"none", "one-row", "all-rows"} {
		b.Run(sc, func(b *testing.B) {
			s, db, _ := openPostgresStore(b)
			ok, err := s.Insert(ctx(b), pendingTask("prime"), limit) // the shares of this limit
			require.NoError(b, err)
			require.True(b, ok)
			var during, blocked, endsBlocked, endsAll int
			for round := range b.N {
				running := make([]apcore.StoredTask, ends)
				for i := range running {
					running[i] = apcore.StoredTask{Info: apcore.TaskInfo{TaskID: fmt.Sprintf("run-%d-%d", round, i), ModuleID: "a.b",
						Status: apcore.StatusRunning, SubmittedAt: time.Now()}, Owner: "w"}
					ok, err := s.Insert(ctx(b), running[i], limit)
					require.NoError(b, err)
					require.True(b, ok)
				}
				var mu sync.Mutex
				ended := make(chan struct{}) // the transaction ended
				begun := time.Now()
				if sc == "none" {
					time.AfterFunc(hold, func() { close(ended) })
				} else {
					tx, err := db.BeginTx(ctx(b), nil)
					require.NoError(b, err)
					lim := limit
					if sc == "all-rows" {
						lim++
					}
					ok, err := s.InsertTx(ctx(b), tx, pendingTask(fmt.Sprintf("held-%d", round)), lim)
					require.NoError(b, err)
					require.True(b, ok)
					begun = time.Now()
					time.AfterFunc(hold, func() { _ = tx.Commit(); close(ended) })
				}
				isOpen := func() bool {
					select {
					case <-ended:
						return false
					default:
						return true
					}
				}
				var wg sync.WaitGroup
				for w := range submitters {
					wg.Go(func() {
						for i := 0; time.Since(begun) < hold; i++ {
							at := time.Now()
							ok, err := s.Insert(ctx(b), pendingTask(fmt.Sprintf("ins-%d-%d-%d", round, w, i)), limit)
							if err != nil || !ok {
								b.Errorf("insert: %v %v", ok, err)
								return
							}
							mu.Lock()
							if isOpen() {
								during++
							}
							if time.Since(at) >= hold/2 {
								blocked++
							}
							mu.Unlock()
						}
					})
				}
				for _, st := range running {
					wg.Go(func() {
						st.Info.Status, st.Info.CompletedAt = apcore.StatusCompleted, time.Now()
						at := time.Now()
						ok, err := s.Update(ctx(b), st, "w")
						if err != nil || !ok {
							b.Errorf("end: %v %v", ok, err)
							return
						}
						mu.Lock()
						endsAll++
						if time.Since(at) >= hold/2 {
							endsBlocked++
						}
						mu.Unlock()
					})
				}
				wg.Wait()
				<-ended
			}
			b.ReportMetric(float64(during)/float64(b.N), "inserts-while-open")
			b.ReportMetric(float64(blocked)/float64(b.N), "inserts-waited")
			b.ReportMetric(100*float64(endsBlocked)/float64(endsAll), "%ends-waited")
			b.ReportMetric(0, "ns/op")
		})
	}
}

package sqlstore_test

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tasks scheduled for later cost recovery nothing while they wait (issue
// #19): Recover, which each manager runs every half lease TTL, reads the
// records that managers hold through the held index, not the records that
// wait, held by no one. Among 10,000, 100,000 and 1,000,000 scheduled records, with
// the same few held ones (five of a live manager, three of one whose lease
// lapsed), PostgreSQL's Recover reads about as many buffers (EXPLAIN
// (ANALYZE, BUFFERS), in a transaction rolled back), and its plan scans
// the held index; SQLite's plan searches by it too. Times are logged.
func TestRecoverAmongAMillionScheduled(t *testing.T) {
	t.Run("PostgreSQL", func(t *testing.T) {
		var buffers []int
		for _, n := range []int{10_000, 100_000, 1_000_000} {
			s, db, table := openPostgresStore(t)
			fillScheduled(t, db, sqlstore.PostgreSQL, table, n)
			addHeld(t, s)
			b, took := explainRecover(t, db, s, table)
			buffers = append(buffers, b)
			times := timeRecovers(t, s, 20)
			t.Logf("PostgreSQL, %d scheduled: Recover read %d buffers, ran %v in the server; %d Recovers, median %v, max %v",
				n, b, took, len(times), times[len(times)/2], times[len(times)-1])
		}
		// The index pages of a few held records, the leases and the
		// slots' rows: a handful either way, where a read of the waiting
		// records took tens of thousands at a million.
		assert.LessOrEqual(t, buffers[2], 2*buffers[0]+10, "Recover's buffers at 10,000, 100,000 and 1,000,000 scheduled records: %v", buffers)
	})
	t.Run("SQLite", func(t *testing.T) {
		sizes := []int{10_000, 1_000_000}
		if raceOn {
			sizes[1] = 100_000 // a million takes minutes under the race detector
		}
		for _, n := range sizes {
			s, db, table := openSQLiteStore(t)
			fillScheduled(t, db, sqlstore.SQLite, table, n)
			addHeld(t, s)
			for _, m := range []string{"Recover", "Orphans"} {
				plan, err := s.Explain(ctx(t), m)
				require.NoError(t, err)
				t.Logf("SQLite, %d scheduled, %s: %s", n, m, strings.ReplaceAll(plan, "\n", "; "))
				assert.Regexp(t, `(?m)^(SEARCH|SCAN) `+table+` USING (COVERING )?INDEX `+table+`_held( |$)`, plan, m)
			}
			plan, err := s.Explain(ctx(t), "Recover")
			require.NoError(t, err)
			assert.NotContains(t, plan, "status_seq", "Recover")
			plan, err = s.Explain(ctx(t), "Orphans")
			require.NoError(t, err)
			assert.NotRegexp(t, `SCAN `+table+`($|;|\n)`, plan, "Orphans: no scan of the table")
			times := timeRecovers(t, s, 20)
			t.Logf("SQLite, %d scheduled: %d Recovers, median %v, max %v", n, len(times), times[len(times)/2], times[len(times)-1])
			left, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			assert.Equal(t, n+5+3, left, "the live manager's records and the scheduled ones stay active; the dead one's resumable ones are pending again")
		}
	})
}

// addHeld inserts five running records held by "live", whose lease ends
// in an hour, and three held by "dead", whose lease ended (resumable: a
// Recover hands them back).
func addHeld(t *testing.T, s *sqlstore.Store) {
	t.Helper()
	now := time.Now()
	for owner, expires := range map[string]time.Time{"live": now.Add(time.Hour), "dead": now.Add(-time.Minute)} {
		_, err := s.Renew(ctx(t), apcore.LeaseRequest{Owner: owner, Expires: expires, Create: true})
		require.NoError(t, err)
		n := map[string]int{"live": 5, "dead": 3}[owner]
		for i := range n {
			task := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: fmt.Sprintf("%s-%d", owner, i), ModuleID: "a.b", Status: apcore.StatusRunning,
				SubmittedAt: now, StartedAt: now}, Owner: owner, Resumable: true, Inputs: []byte(`{}`)}
			ok, err := s.Insert(ctx(t), task, 1<<30)
			require.NoError(t, err)
			require.True(t, ok)
		}
	}
}

// explainRecover runs Recover's statement under EXPLAIN (ANALYZE,
// BUFFERS) in a transaction that it rolls back, checks that its plan scans
// the tasks table through the held index only, and returns the buffers its
// plan read (shared, hit or read) and the time the server took.
func explainRecover(t *testing.T, db *sql.DB, s *sqlstore.Store, table string) (int, time.Duration) {
	t.Helper()
	query, args, err := sqlstore.ExplainQuery(s, "Recover")
	require.NoError(t, err)
	tx, err := db.BeginTx(ctx(t), nil)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	var raw string
	require.NoError(t, tx.QueryRowContext(ctx(t), "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) "+query, args...).Scan(&raw))
	var out []struct {
		Plan struct {
			planNode
			Hit  int `json:"Shared Hit Blocks"`
			Read int `json:"Shared Read Blocks"`
		}
		Execution float64 `json:"Execution Time"`
	}
	require.NoError(t, json.Unmarshal([]byte(raw), &out))
	require.Len(t, out, 1)
	scans := out[0].Plan.scans(table)
	t.Logf("Recover scans: %s", strings.Join(scans, "; "))
	require.NotEmpty(t, scans)
	for _, sc := range scans {
		_, index, _ := strings.Cut(sc, " Scan ")
		assert.Equal(t, table+"_held", index, "Recover scans %s", sc)
	}
	return out[0].Plan.Hit + out[0].Plan.Read, time.Duration(out[0].Execution * float64(time.Millisecond))
}

// timeRecovers returns the sorted durations of n Recovers.
func timeRecovers(t *testing.T, s *sqlstore.Store, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		start := time.Now()
		_, err := s.Recover(ctx(t), time.Now())
		out[i] = time.Since(start)
		require.NoError(t, err)
	}
	slices.Sort(out)
	return out
}

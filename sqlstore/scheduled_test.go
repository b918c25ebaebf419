package sqlstore_test

import (
	"database/sql"
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

// fillScheduled adds n pending resumable records held by no one, each
// waiting for a not_before an hour or more ahead (due 0), and makes the
// statistics. On PostgreSQL the insert goes past the counting triggers,
// and New counts the records again (without its version table it runs
// every migration, as on a table made before numbered migrations).
func fillScheduled(t testing.TB, db *sql.DB, d sqlstore.Dialect, table string, n int) {
	t.Helper()
	start := time.Now()
	later := time.Now().Add(time.Hour).UnixMicro()
	cols := "task_id, module_id, status, submitted_at, owner, resumable, inputs, not_before, run_at, due"
	vals := fmt.Sprintf("'sch-' || g, 'mod.m' || (g %% 20), 'pending', %d, '', 1, '{}', %d + g, %d + g, 0", later-time.Hour.Microseconds(), later, later)
	stmts := []string{fmt.Sprintf(`INSERT INTO %s (%s) WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < %d)
	SELECT %s FROM c`, table, cols, n, vals), "ANALYZE " + table}
	if d == sqlstore.PostgreSQL {
		stmts = []string{
			fmt.Sprintf("ALTER TABLE %s DISABLE TRIGGER USER", table),
			fmt.Sprintf("INSERT INTO %s (%s, slot) SELECT %s, g %% 16 FROM generate_series(1, %d) AS g", table, cols, vals, n),
			fmt.Sprintf("ALTER TABLE %s ENABLE TRIGGER USER", table),
			fmt.Sprintf("DELETE FROM %s_slots", table),
			fmt.Sprintf("DROP TABLE %s_schema_version", table),
		}
	}
	for _, stmt := range stmts {
		_, err := db.ExecContext(ctx(t), stmt)
		require.NoError(t, err, stmt)
	}
	if d == sqlstore.PostgreSQL {
		s, err := sqlstore.New(ctx(t), db, d, sqlstore.WithTable(table))
		require.NoError(t, err)
		require.NoError(t, s.Close())
		_, err = db.ExecContext(ctx(t), "VACUUM ANALYZE "+table)
		require.NoError(t, err)
	}
	t.Logf("%v: %d scheduled records made in %v", d, n, time.Since(start).Round(time.Millisecond))
}

// A million scheduled records that are not due cost a Claim nothing: the
// promote finds none through the scheduled index (the first entry is
// later than now), and the claim walks the ready records only. Among a
// few ready records and a few scheduled ones whose time has come, a
// Claim takes the higher priorities first, then insertion order. The
// plans use the indexes, and the times are logged.
func TestClaimAmongAMillionScheduled(t *testing.T) {
	for _, b := range []struct {
		name string
		open func(testing.TB) (*sqlstore.Store, *sql.DB, string)
		d    sqlstore.Dialect
	}{{"PostgreSQL", openPostgresStore, sqlstore.PostgreSQL}, {"SQLite", openSQLiteStore, sqlstore.SQLite}} {
		t.Run(b.name, func(t *testing.T) {
			s, db, table := b.open(t)
			n := 1_000_000
			if raceOn && b.d == sqlstore.SQLite {
				n = 100_000 // a million takes minutes under the race detector
			}
			fillScheduled(t, db, b.d, table, n)
			_, err := s.Renew(ctx(t), apcore.LeaseRequest{Owner: "m1", Expires: time.Now().Add(time.Hour), Create: true})
			require.NoError(t, err)

			// idle: nothing due among the million
			idle := timeClaims(t, s, 50)
			t.Logf("%s: an empty-handed Claim among %d scheduled records: median %v, max %v", b.name, n, idle[len(idle)/2], idle[len(idle)-1])
			var plans []string
			for _, m := range []string{"Promote", "Claim", "ClaimModules"} {
				plan, err := s.Explain(ctx(t), m)
				require.NoError(t, err)
				plans = append(plans, m+": "+strings.ReplaceAll(plan, "\n", "; "))
				if b.d == sqlstore.PostgreSQL {
					assert.NotContains(t, plan, "Seq Scan on "+table+" ", m)
					want := map[string]string{"Promote": "_scheduled", "Claim": "_claim", "ClaimModules": "_claim"}[m]
					assert.Contains(t, plan, table+want, m)
				} else {
					assert.NotRegexp(t, `SCAN `+table+`($|\n)`, plan, m)
					assert.NotContains(t, plan, "status_seq", m)
					want := map[string]string{"Promote": "_scheduled", "Claim": "_claim", "ClaimModules": "_claim_module"}[m]
					assert.Regexp(t, `(?m)(SEARCH|SCAN) `+table+` USING (COVERING )?INDEX `+table+want+`( |$)`, plan, m)
				}
			}
			t.Logf("%s plans:\n%s", b.name, strings.Join(plans, "\n"))

			now := time.Now()
			add := func(id string, priority int, notBefore time.Time) {
				task := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now, Priority: priority},
					Resumable: true, Inputs: []byte(`{}`), NotBefore: notBefore}
				if !notBefore.IsZero() {
					task.Info.RunAt = &notBefore
				}
				ok, err := s.Insert(ctx(t), task, 2*n)
				require.NoError(t, err)
				require.True(t, ok, id)
			}
			add("ready-0", 0, time.Time{})
			add("sched-10", 10, now.Add(-time.Minute))
			add("ready-5", 5, time.Time{})
			add("sched-0", 0, now.Add(-time.Second))
			add("ready-neg", -5, time.Time{})
			add("sched-later", 100, now.Add(time.Minute)) // not due: stays
			start := time.Now()
			got, err := s.Claim(ctx(t), apcore.ClaimRequest{Owner: "m1", Limit: 10, Now: time.Now()})
			took := time.Since(start)
			require.NoError(t, err)
			var ids []string
			for _, st := range got {
				ids = append(ids, st.Info.TaskID)
			}
			assert.Equal(t, []string{"sched-10", "ready-5", "ready-0", "sched-0", "ready-neg"}, ids)
			t.Logf("%s: a Claim of 5 (2 promoted) among %d scheduled records: %v", b.name, n, took)
			idle = timeClaims(t, s, 50)
			t.Logf("%s: again empty-handed: median %v, max %v", b.name, idle[len(idle)/2], idle[len(idle)-1])
		})
	}
}

// timeClaims returns the sorted durations of n Claims that find nothing.
func timeClaims(t *testing.T, s *sqlstore.Store, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		start := time.Now()
		got, err := s.Claim(ctx(t), apcore.ClaimRequest{Owner: "m1", Limit: 5, Now: time.Now()})
		out[i] = time.Since(start)
		require.NoError(t, err)
		require.Empty(t, got)
	}
	slices.Sort(out)
	return out
}

// BenchmarkInsertUnique inserts records with and without a unique key (a
// fresh key each), and with a key that a record holds (the duplicate: the
// insert that does nothing, then the lookup of the holder), into a table
// of one store.
//
//	go test -run '^$' -bench InsertUnique
func BenchmarkInsertUnique(b *testing.B) {
	for _, be := range scaleBackends {
		for _, kind := range []string{"plain", "unique", "duplicate"} {
			b.Run(be.name+"/"+kind, func(b *testing.B) {
				s, _, _ := be.open(b)
				held := pendingTask("held")
				held.Info.UniqueKey = "held"
				_, err := s.Insert(ctx(b), held, 1<<30)
				require.NoError(b, err)
				b.ResetTimer()
				for i := range b.N {
					task := pendingTask(fmt.Sprintf("%s-%d", kind, i))
					switch kind {
					case "unique":
						task.Info.UniqueKey = fmt.Sprintf("key-%d", i)
					case "duplicate":
						task.Info.UniqueKey = "held"
					}
					ok, err := s.Insert(ctx(b), task, 1<<30)
					if kind == "duplicate" {
						if ok || err == nil {
							b.Fatalf("duplicate inserted: %v, %v", ok, err)
						}
						continue
					}
					if !ok || err != nil {
						b.Fatalf("Insert: %v, %v", ok, err)
					}
				}
			})
		}
	}
}

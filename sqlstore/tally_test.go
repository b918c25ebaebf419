package sqlstore_test

import (
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// countTable is the table of the count rows beside a store's table.
func countTable(dialect sqlstore.Dialect, table string) string {
	if dialect == sqlstore.PostgreSQL {
		return table + "_slots"
	}
	return table + "_active"
}

// snapshotCounts reads, in one transaction (one snapshot), the sums of the
// count rows' columns and the records of each kind counted in the table,
// and returns both as active, completed, failed, cancelled.
func snapshotCounts(t *testing.T, db *sql.DB, dialect sqlstore.Dialect, table string) (kept, counted [4]int64) {
	t.Helper()
	opts := &sql.TxOptions{}
	if dialect == sqlstore.PostgreSQL {
		opts.Isolation = sql.LevelRepeatableRead
	}
	tx, err := db.BeginTx(ctx(t), opts)
	require.NoError(t, err)
	defer tx.Rollback() //nolint:errcheck
	require.NoError(t, tx.QueryRowContext(ctx(t), fmt.Sprintf(
		"SELECT COALESCE(sum(active), 0), COALESCE(sum(completed), 0), COALESCE(sum(failed), 0), COALESCE(sum(cancelled), 0) FROM %s",
		countTable(dialect, table))).Scan(&kept[0], &kept[1], &kept[2], &kept[3]))
	require.NoError(t, tx.QueryRowContext(ctx(t), fmt.Sprintf(`SELECT
	COALESCE(sum(CASE WHEN status IN ('pending', 'running') THEN 1 ELSE 0 END), 0),
	COALESCE(sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), 0),
	COALESCE(sum(CASE WHEN status = 'failed' THEN 1 ELSE 0 END), 0),
	COALESCE(sum(CASE WHEN status = 'cancelled' THEN 1 ELSE 0 END), 0) FROM %s`, table)).Scan(&counted[0], &counted[1], &counted[2], &counted[3]))
	return kept, counted
}

// Racing inserts, starts, ends in each terminal state, saves of new ended
// records, removes and batch sweeps keep the count of each state exact:
// in every snapshot a reader takes during the race (the count rows and a
// COUNT(*) of the table read together), and at the end, where Count of
// each state equals the records there are.
func TestCountsExactUnderRacingWrites(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			raw := b.raw(t)
			workers, rounds := 6, 60
			if b.dialect == sqlstore.SQLite {
				workers, rounds = 3, 40
			}
			ends := []apcore.TaskStatus{apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}
			var wg sync.WaitGroup
			var stop atomic.Bool
			var swept atomic.Int64
			for w := range workers {
				wg.Go(func() {
					for i := range rounds {
						id := fmt.Sprintf("w%d-%d", w, i)
						ok, err := s.Insert(ctx(t), pendingTask(id), 1_000_000)
						if !assert.NoError(t, err) || !assert.True(t, ok) {
							return
						}
						info := pendingTask(id).Info
						if i%5 == 4 { // one in five stays pending
							continue
						}
						info.Status, info.StartedAt = apcore.StatusRunning, time.Now()
						ok, err = s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "o"}, "o")
						if !assert.NoError(t, err) || !assert.True(t, ok) {
							return
						}
						if i%5 == 3 { // and one stays running
							continue
						}
						info.Status, info.CompletedAt = ends[i%3], time.Now()
						ok, err = s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "o"}, "o")
						if !assert.NoError(t, err) || !assert.True(t, ok) {
							return
						}
						// An ended record saved as it is, new.
						saved := apcore.TaskInfo{TaskID: id + "-saved", ModuleID: "a.b", Status: ends[(i+1)%3], SubmittedAt: time.Now(), CompletedAt: time.Now()}
						if !assert.NoError(t, s.Save(ctx(t), saved)) {
							return
						}
						if i%4 == 0 {
							_, err := s.Remove(ctx(t), id)
							if !assert.NoError(t, err) {
								return
							}
						}
					}
				})
			}
			var sweepers sync.WaitGroup
			for range 2 {
				sweepers.Go(func() {
					for !stop.Load() {
						n, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Now().Add(-5 * time.Millisecond), Limit: 7})
						if !assert.NoError(t, err) {
							return
						}
						swept.Add(int64(n))
						time.Sleep(time.Millisecond)
					}
				})
			}
			readings := 0
			sweepers.Go(func() {
				for !stop.Load() {
					kept, counted := snapshotCounts(t, raw, b.dialect, s.Table())
					assert.Equal(t, counted, kept, "the count rows against the records, in one snapshot")
					readings++
					time.Sleep(2 * time.Millisecond)
				}
			})
			wg.Wait()
			stop.Store(true)
			sweepers.Wait()
			t.Logf("%d snapshots compared, %d records swept", readings, swept.Load())
			assert.Positive(t, swept.Load())
			kept, counted := snapshotCounts(t, raw, b.dialect, s.Table())
			assert.Equal(t, counted, kept)
			checkCounts(t, s, "the race")
			// The sweeps take what is left of the ended records.
			for {
				n, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Now(), Limit: 1000})
				require.NoError(t, err)
				if n == 0 {
					break
				}
			}
			checkCounts(t, s, "the last sweeps")
			n, err := s.Count(ctx(t), apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled)
			require.NoError(t, err)
			assert.Zero(t, n)
		})
	}
}

// The counts of the terminal states and of every record read the count
// rows, not the tasks table: their plans name no other table, on a table
// of many records.
func TestCountOfTerminalStatesReadsNoRecord(t *testing.T) {
	for _, be := range scaleBackends {
		t.Run(be.name, func(t *testing.T) {
			s, db, table := be.open(t)
			be.fill(t, db, table, time.Now().Add(-time.Hour).UnixMicro(), 10_000)
			dialect := sqlstore.SQLite
			if be.name == "PostgreSQL" {
				dialect = sqlstore.PostgreSQL
			}
			for _, method := range []string{"CountTerminal", "CountAll"} {
				plan, err := s.Explain(ctx(t), method)
				require.NoError(t, err)
				t.Logf("%s: %s", method, strings.ReplaceAll(plan, "\n", "; "))
				assert.Contains(t, plan, countTable(dialect, table), method)
				assert.NotContains(t, strings.ReplaceAll(plan, countTable(dialect, table), ""), table, "%s reads the tasks table", method)
			}
			kept, counted := snapshotCounts(t, db, dialect, table)
			assert.Equal(t, counted, kept)
			n, err := s.Count(ctx(t), apcore.StatusCompleted)
			require.NoError(t, err)
			assert.Equal(t, counted[1], int64(n))
		})
	}
}

// downgrade turns a store's table back into what the previous version
// made: its count rows without the tallies, and its triggers, which
// counted only the active records (on PostgreSQL a row trigger for
// deletes, none for the inserts of ended records).
func downgrade(t *testing.T, db *sql.DB, dialect sqlstore.Dialect, table string) {
	t.Helper()
	active := "status IN ('pending', 'running')"
	// no version table: the previous version had none
	stmts := []string{"DROP TABLE " + table + "_schema_version"}
	if dialect == sqlstore.SQLite {
		c := table + "_active"
		stmts = append(stmts,
			"DROP TRIGGER "+table+"_count_insert", "DROP TRIGGER "+table+"_count_delete", "DROP TRIGGER "+table+"_count_update",
			"ALTER TABLE "+c+" DROP COLUMN completed", "ALTER TABLE "+c+" DROP COLUMN failed", "ALTER TABLE "+c+" DROP COLUMN cancelled",
			fmt.Sprintf(`CREATE TRIGGER %s_count_insert AFTER INSERT ON %s WHEN new.%s
BEGIN UPDATE %s SET active = active + 1 WHERE id = 1; END`, table, table, active, c),
			fmt.Sprintf(`CREATE TRIGGER %s_count_delete AFTER DELETE ON %s WHEN old.%s
BEGIN UPDATE %s SET active = active - 1 WHERE id = 1; END`, table, table, active, c),
			fmt.Sprintf(`CREATE TRIGGER %s_count_update AFTER UPDATE OF status ON %s WHEN (new.%s) <> (old.%s)
BEGIN UPDATE %s SET active = active + (CASE WHEN new.%s THEN 1 ELSE -1 END) WHERE id = 1; END`, table, table, active, active, c, active),
		)
	} else {
		fn, sl := table+"_slot_count", table+"_slots"
		for _, name := range []string{"insert", "born", "delete", "update", "truncate"} {
			stmts = append(stmts, fmt.Sprintf("DROP TRIGGER %s_slot_%s ON %s", table, name, table))
		}
		stmts = append(stmts,
			"DROP FUNCTION "+table+"_slot_born()", "DROP FUNCTION "+table+"_slot_gone()",
			"ALTER TABLE "+sl+" DROP COLUMN completed, DROP COLUMN failed, DROP COLUMN cancelled",
			fmt.Sprintf(`CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	IF TG_OP = 'TRUNCATE' THEN
		UPDATE %s SET active = 0;
		RETURN NULL;
	END IF;
	IF TG_OP <> 'DELETE' AND NEW.%s THEN
		UPDATE %s SET active = active + 1 WHERE id = NEW.slot;
	END IF;
	IF TG_OP <> 'INSERT' AND OLD.%s THEN
		UPDATE %s SET active = active - 1 WHERE id = OLD.slot;
	END IF;
	RETURN NULL;
END $$`, fn, sl, active, sl, active, sl),
			fmt.Sprintf("CREATE TRIGGER %s_slot_insert AFTER INSERT ON %s FOR EACH ROW WHEN (NEW.%s) EXECUTE FUNCTION %s()", table, table, active, fn),
			fmt.Sprintf("CREATE TRIGGER %s_slot_delete AFTER DELETE ON %s FOR EACH ROW WHEN (OLD.%s) EXECUTE FUNCTION %s()", table, table, active, fn),
			fmt.Sprintf("CREATE TRIGGER %s_slot_update AFTER UPDATE OF status ON %s FOR EACH ROW WHEN ((OLD.%s) <> (NEW.%s)) EXECUTE FUNCTION %s()",
				table, table, active, active, fn),
			fmt.Sprintf("CREATE TRIGGER %s_slot_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION %s()", table, table, fn))
	}
	for _, stmt := range stmts {
		_, err := db.ExecContext(ctx(t), stmt)
		require.NoError(t, err, stmt)
	}
}

// writeSome runs a mix of writes through a store: inserts, starts, ends in
// each terminal state, saves of ended records, removes and a sweep.
func writeSome(t *testing.T, s *sqlstore.Store, prefix string, n int) {
	t.Helper()
	ends := []apcore.TaskStatus{apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}
	old := time.Now().Add(-time.Hour)
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		ok, err := s.Insert(ctx(t), pendingTask(id), 1_000_000)
		require.NoError(t, err)
		require.True(t, ok)
		if i%4 == 0 {
			continue
		}
		info := pendingTask(id).Info
		info.Status = ends[i%3]
		ok, err = s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "o"}, "o")
		require.NoError(t, err)
		require.True(t, ok)
		require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: id + "-saved", ModuleID: "a.b", Status: ends[(i+1)%3], SubmittedAt: old, CompletedAt: old}))
		if i%5 == 0 {
			_, err := s.Remove(ctx(t), id)
			require.NoError(t, err)
		}
	}
	_, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Now().Add(-time.Minute), Limit: n / 3})
	require.NoError(t, err)
}

// A table that the previous version made, with count rows that counted
// only the active records, gets the tallies when this version's New
// starts on it: the columns added, filled from the records there, and the
// triggers made anew, in New's migration. Writes before (through the old
// triggers, as an older replica's are) and after are counted, and a second
// New changes nothing.
func TestMigratesCountRowsWithoutTallies(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			s := b.open(t)
			raw := b.raw(t)
			downgrade(t, raw, b.dialect, s.Table())
			writeSome(t, s, "old", 60) // s writes as the previous version did: the same statements
			var cols int
			q := "SELECT count(*) FROM pragma_table_info(?)"
			if b.dialect == sqlstore.PostgreSQL {
				q = "SELECT count(*) FROM information_schema.columns WHERE table_name = $1"
			}
			require.NoError(t, raw.QueryRow(q, countTable(b.dialect, s.Table())).Scan(&cols))
			require.Equal(t, map[sqlstore.Dialect]int{sqlstore.SQLite: 2, sqlstore.PostgreSQL: 4}[b.dialect], cols, "the previous version's count rows")

			upgraded := b.open(t)
			require.NoError(t, raw.QueryRow(q, countTable(b.dialect, s.Table())).Scan(&cols))
			require.Equal(t, map[sqlstore.Dialect]int{sqlstore.SQLite: 5, sqlstore.PostgreSQL: 7}[b.dialect], cols, "the tallies added")
			kept, counted := snapshotCounts(t, raw, b.dialect, s.Table())
			require.Equal(t, counted, kept, "the counts filled from the records there")
			require.NotZero(t, counted[1]+counted[2]+counted[3])
			checkCounts(t, upgraded, "the upgrade")

			writeSome(t, upgraded, "new", 40)
			writeSome(t, s, "older", 20) // an older replica still running writes through the same triggers
			checkCounts(t, upgraded, "writes after the upgrade")
			again := b.open(t)
			checkCounts(t, again, "a second New")
			writeSome(t, again, "again", 20)
			kept, counted = snapshotCounts(t, raw, b.dialect, s.Table())
			require.Equal(t, counted, kept)
		})
	}
}

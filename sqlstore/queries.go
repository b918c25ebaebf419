package sqlstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ph returns the dialect's placeholder for the n-th (1-based) argument.
func (s *Store) ph(n int) string {
	if s.dialect == PostgreSQL {
		return fmt.Sprintf("$%d", n)
	}
	return "?"
}

// phs returns placeholders from..to, comma-separated.
func (s *Store) phs(from, to int) string {
	p := make([]string, 0, to-from+1)
	for i := from; i <= to; i++ {
		p = append(p, s.ph(i))
	}
	return strings.Join(p, ", ")
}

// sets returns "col = $n, ..." for cols, numbering from first.
func (s *Store) sets(cols []string, first int) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = fmt.Sprintf("%s = %s", c, s.ph(first+i))
	}
	return strings.Join(out, ", ")
}

// queries are the statements, built once for a table and a dialect.
type queries struct {
	upsert, saveIf, get, list, listStatus, listExpired, del, countActive                               string
	insert, update, claim, claimAny, lost, renew, renewCreate, release, recover, deleteLapsed, orphans string
	// claimIn and claimAnyIn are claim and claimAny restricted to the
	// module ids of one more argument (see Claim's Modules).
	claimIn, claimAnyIn string
	// promote marks due the waiting records whose not_before has come
	// (see Claim); holder finds the record that holds a unique key.
	promote, holder string
	// insertShared is PostgreSQL's Insert when the slot's room is used up
	// (see admitFunction); insert then checks one slot.
	insertShared string
	// The pages of ListPage: every record or one state's (pageStatus*),
	// in insertion order (*Up) or newest first (*Down); and Sweep's batch.
	pageUp, pageDown, pageStatusUp, pageStatusDown, sweep string
}

func (s *Store) buildQueries() queries {
	t := s.table
	info := strings.Join(infoColumns, ", ")
	all := append(append([]string{}, infoColumns...), sharedColumns...)
	stored := "seq, " + info + ", " + strings.Join(sharedColumns, ", ")
	n := len(infoColumns)
	q := queries{
		upsert: fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)\nON CONFLICT (task_id) DO UPDATE SET %s",
			t, info, s.phs(1, len(infoColumns)), excluded(infoColumns[1:])),
		// the from states follow as arguments n+1 and on (see SaveIf)
		saveIf: fmt.Sprintf("UPDATE %s SET %s WHERE task_id = %s AND status IN (", t, s.sets(infoColumns[1:], 1), s.ph(n)),
		get:    fmt.Sprintf("SELECT %s FROM %s WHERE task_id = %s", info, t, s.ph(1)),
		list:   fmt.Sprintf("SELECT %s FROM %s ORDER BY seq", info, t),
		// the state follows as a constant (see List)
		listStatus: fmt.Sprintf("SELECT %s FROM %s WHERE status = ", info, t),
		// ListExpired's time follows as a constant (see listExpiredQuery).
		listExpired: fmt.Sprintf("SELECT %s FROM %s WHERE %s AND completed_at IS NOT NULL AND %s < ", info, t, terminalIn, expiresAt),
		// A page reads one row more than asked, to know whether another
		// page follows (see ListPage).
		pageUp:         fmt.Sprintf("SELECT seq, %s FROM %s WHERE seq > %s ORDER BY seq LIMIT %s", info, t, s.ph(1), s.ph(2)),
		pageDown:       fmt.Sprintf("SELECT seq, %s FROM %s WHERE seq < %s ORDER BY seq DESC LIMIT %s", info, t, s.ph(1), s.ph(2)),
		pageStatusUp:   fmt.Sprintf("SELECT seq, %s FROM %s WHERE status = %s AND seq > %s ORDER BY seq LIMIT %s", info, t, s.ph(1), s.ph(2), s.ph(3)),
		pageStatusDown: fmt.Sprintf("SELECT seq, %s FROM %s WHERE status = %s AND seq < %s ORDER BY seq DESC LIMIT %s", info, t, s.ph(1), s.ph(2), s.ph(3)),
		del:            fmt.Sprintf("DELETE FROM %s WHERE task_id = %s", t, s.ph(1)),
		countActive:    fmt.Sprintf("SELECT active FROM %s WHERE id = 1", s.counter()),

		// Update: the record's columns after task_id, owner, not_before,
		// due; then task_id and the holder. The holder is compared as an
		// expression (owner || ''): PostgreSQL proves from owner = 'o'
		// that the record is in the held index, whose predicate is
		// owner <> '', and may then read every record that 'o' holds for
		// the one the task_id index finds.
		update: fmt.Sprintf("UPDATE %s SET %s, owner = %s, not_before = %s, due = %s WHERE task_id = %s AND %s AND (owner || '') = %s",
			t, s.sets(infoColumns[1:], 1), s.ph(n), s.ph(n+1), s.ph(n+2), s.ph(n+3), activeIn, s.ph(n+4)),
		// One lookup in the unique key index (its predicate spelled out,
		// so that both planners see that the index serves it).
		holder:      fmt.Sprintf("SELECT task_id FROM %s WHERE unique_key = %s AND %s", t, s.ph(1), keyHeld),
		renew:       fmt.Sprintf("UPDATE %s SET expires_at = %s WHERE owner = %s", s.leases(), s.ph(1), s.ph(2)),
		renewCreate: fmt.Sprintf("INSERT INTO %s (owner, expires_at) VALUES (%s, %s) ON CONFLICT (owner) DO UPDATE SET expires_at = excluded.expires_at", s.leases(), s.ph(1), s.ph(2)),
		release:     fmt.Sprintf("DELETE FROM %s WHERE owner = %s", s.leases(), s.ph(1)),
	}
	q.orphans = s.orphansQuery(info)
	// Recover's change of a record whose owner's lease is gone: arguments
	// now, the message and the code.
	abandon := func(first int) string {
		return fmt.Sprintf(`status = CASE WHEN resumable = 1 THEN 'pending' ELSE 'failed' END,
	owner = CASE WHEN resumable = 1 THEN '' ELSE owner END,
	completed_at = CASE WHEN resumable = 1 THEN completed_at ELSE %s END,
	result = CASE WHEN resumable = 1 THEN result ELSE NULL END,
	error = CASE WHEN resumable = 1 THEN error ELSE %s END,
	error_code = CASE WHEN resumable = 1 THEN error_code ELSE %s END`, s.ph(first), s.ph(first+1), s.ph(first+2))
	}
	claimSet := fmt.Sprintf("status = 'running', owner = %s, started_at = COALESCE(started_at, %s)", s.ph(1), s.ph(2))
	// A due record is one of the claim index's (ready: not waiting, or
	// promoted) whose not_before has come by this Claim's Now: one that a
	// Claim with a later Now promoted, or one an older version handed
	// back with a not_before (without setting due), is passed over until
	// its time.
	due := fmt.Sprintf("%s AND (not_before IS NULL OR not_before <= %s)", ready, s.ph(3))
	// A unique key's conflict does nothing: Insert then looks up the
	// holder. The inference names the unique key index by its predicate.
	onKey := fmt.Sprintf("\nON CONFLICT (unique_key) WHERE %s DO NOTHING", keyHeld)
	if s.dialect == PostgreSQL {
		casts := make([]string, len(all))
		for i, c := range all {
			casts[i] = fmt.Sprintf("$%d::%s", i+1, pgTypes[c])
		}
		// The gate locks the task's slot (argument n+2) when it has room
		// under the cap it was shared from (n+1): a concurrent Insert on
		// that slot waits for the lock, then sees the count that this
		// one's trigger raised (READ COMMITTED re-checks the row's new
		// version). When it has none, insertShared shares the cap anew.
		cols, vals := strings.Join(append(all, "slot"), ", "), strings.Join(casts, ", ")
		// A page of one state is bounded by two row comparisons on the
		// (status, seq) index's columns, (status, seq) after ($1, $2) and
		// before ($1, the end), and ordered by both: the same records as
		// status = $1 AND seq > $2, but the status is then no constant
		// that the planner drops from the order, so only that index gives
		// the order without sorting every record of the state, and both
		// bounds position its scan. Written with status = $1, the plan
		// PostgreSQL caches for a prepared statement (any status) walks
		// the primary key and filters by status: the whole table, for a
		// page of a rare state.
		q.pageStatusUp = fmt.Sprintf("SELECT seq, %s FROM %s WHERE (status, seq) > ($1, $2) AND (status, seq) < ($1, %d) ORDER BY status, seq LIMIT $3",
			info, t, int64(math.MaxInt64))
		q.pageStatusDown = fmt.Sprintf("SELECT seq, %s FROM %s WHERE (status, seq) < ($1, $2) AND (status, seq) > ($1, 0) ORDER BY status DESC, seq DESC LIMIT $3",
			info, t)
		q.insert = fmt.Sprintf("WITH gate AS (SELECT id FROM %s WHERE id = $%d AND active < cap AND lim = $%d FOR UPDATE)\nINSERT INTO %s (%s) SELECT %s, gate.id FROM gate%s",
			s.slots(), len(all)+2, len(all)+1, t, cols, vals, onKey)
		q.insertShared = fmt.Sprintf("INSERT INTO %s (%s) SELECT %s, a.id FROM (SELECT %s($%d) AS id) AS a WHERE a.id IS NOT NULL%s",
			t, cols, vals, s.admitFn(), len(all)+1, onKey)
		// A batch of the waiting records whose time has come, by the
		// scheduled index in order of not_before, locked (skipping what a
		// racing Claim holds) and marked due.
		q.promote = fmt.Sprintf(`UPDATE %s SET due = 1 WHERE seq = ANY(ARRAY(SELECT seq FROM %s WHERE %s AND not_before <= $1
  ORDER BY not_before LIMIT $2 FOR UPDATE SKIP LOCKED))`, t, t, waiting)
		q.countActive = fmt.Sprintf("SELECT COALESCE(sum(active), 0) FROM %s", s.slots())
		// The CTE picks (and locks) the records once; a sub-select in the
		// WHERE could be run again by the plan and pick more than n.
		// Only an owner with a live lease claims (see apcore.SharedStore).
		claim := func(due string) string {
			return fmt.Sprintf(`WITH picked AS MATERIALIZED (SELECT seq FROM %s WHERE %s
  AND EXISTS (SELECT 1 FROM %s l WHERE l.owner = $1 AND l.expires_at >= $3)
  ORDER BY priority DESC, seq LIMIT $4 FOR UPDATE SKIP LOCKED)
UPDATE %s SET %s
FROM picked WHERE %s.seq = picked.seq AND %s
RETURNING %s.%s`, t, due, s.leases(), t, claimSet, t, claimable, t, strings.ReplaceAll(stored, ", ", ", "+t+"."))
		}
		q.claim = claim(due)
		// The module ids are a text array ($5): = ANY keeps the condition
		// on the column itself, which the claim_module index serves.
		q.claimIn = claim(due + " AND module_id = ANY($5)")
		// The status condition is on an expression (status || ''), which
		// no index serves: the unique task_id index is the only way in,
		// one lookup per id. Written on the column, the planner took the
		// (status, seq) index over the active records and filtered them by
		// id, reading every active record's index entries, dead ones
		// included, at each call (issue #17).
		q.lost = fmt.Sprintf("SELECT task_id FROM %s WHERE task_id = ANY($1) AND (status || '') IN ('pending', 'running') AND owner = $2", t)
		// The batch is picked (and locked, skipping what a racing sweeper
		// holds) in the sub-select, through the sweep index, and deleted by
		// primary key: RowsAffected counts what this statement deleted.
		q.sweep = fmt.Sprintf(`DELETE FROM %s WHERE seq = ANY(ARRAY(SELECT seq FROM %s WHERE %s AND %s < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`,
			t, t, terminalIn, expiresAt)
		// One statement: the lapsed leases it deletes, and the owners with
		// no lease at all (as of its snapshot; a lease made since holds
		// no record this statement can see). It reads the held records
		// only, through the held index (its predicate, held, spelled out):
		// the records that wait for their time or for a claim, held by no
		// one, are not read, however many there are (issue #19).
		q.recover = fmt.Sprintf(`WITH gone AS (DELETE FROM %s WHERE expires_at < $1 RETURNING owner)
UPDATE %s SET %s
WHERE %s AND (owner IN (SELECT owner FROM gone) OR NOT EXISTS (SELECT 1 FROM %s l WHERE l.owner = %s.owner))`,
			s.leases(), t, abandon(1), held, s.leases(), t)
	} else {
		// SQLite has one writer at a time: the count and the insert are
		// one atomic statement.
		q.insert = fmt.Sprintf("INSERT INTO %s (%s) SELECT %s WHERE (SELECT active FROM %s WHERE id = 1) < ?%s",
			t, strings.Join(all, ", "), s.phs(1, len(all)), s.counter(), onKey)
		// Only an owner with a live lease claims (see apcore.SharedStore);
		// its two placeholders come after due's (see Claim's arguments).
		// INDEXED BY holds SQLite's planner, which took the (status, seq)
		// index and sorted every pending record (a million scheduled ones
		// among them: 200 ms a claim), to the claim indexes, which hold
		// the ready records only, in the claim's order.
		claim := func(index, due string) string {
			return fmt.Sprintf(`UPDATE %s SET %s
WHERE seq IN (SELECT seq FROM %s INDEXED BY %s_%s WHERE %s
  AND EXISTS (SELECT 1 FROM %s l WHERE l.owner = ? AND l.expires_at >= ?)
  ORDER BY priority DESC, seq LIMIT ?)
RETURNING %s`, t, claimSet, t, t, index, due, s.leases(), stored)
		}
		// The module ids are one JSON array (as Lost's ids are), so that
		// the statement is prepared once whatever their number; IN keeps
		// the condition on the column, which the claim_module index serves.
		dueIn := due + " AND module_id IN (SELECT value FROM json_each(?))"
		q.claim, q.claimIn = claim("claim", due), claim("claim_module", dueIn)
		// An UPDATE takes the write lock even when it matches nothing; the
		// keeper's Claim, mostly empty-handed, first looks with a read,
		// which does not stop the writers: for a ready record, or a
		// waiting one that the promote would make ready (of any module).
		probe := "SELECT 1 WHERE EXISTS (SELECT 1 FROM %s INDEXED BY %s_%s WHERE %s) OR EXISTS (SELECT 1 FROM %s INDEXED BY %s_scheduled WHERE %s AND not_before <= ?)"
		q.claimAny = fmt.Sprintf(probe, t, t, "claim", due, t, t, waiting)
		q.claimAnyIn = fmt.Sprintf(probe, t, t, "claim_module", dueIn, t, t, waiting)
		q.promote = fmt.Sprintf("UPDATE %s SET due = 1 WHERE seq IN (SELECT seq FROM %s INDEXED BY %s_scheduled WHERE %s AND not_before <= ? ORDER BY not_before LIMIT ?)",
			t, t, t, waiting)
		// +status keeps SQLite's planner (which has no statistics) on the
		// task_id index: one lookup per id.
		q.lost = fmt.Sprintf("SELECT task_id FROM %s WHERE task_id IN (SELECT value FROM json_each(?)) AND +%s AND owner = ?", t, activeIn)
		q.deleteLapsed = fmt.Sprintf("DELETE FROM %s WHERE expires_at < ?", s.leases())
		// One writer at a time: the batch the sub-select picks is what
		// the DELETE deletes. INDEXED BY holds SQLite's planner to the
		// sweep index, which without statistics prefers the (status, seq)
		// index: every terminal record read for a batch of the expired.
		q.sweep = fmt.Sprintf("DELETE FROM %s WHERE seq IN (SELECT seq FROM %s INDEXED BY %s_sweep WHERE %s AND %s < ? LIMIT ?)",
			t, t, t, terminalIn, expiresAt)
		q.listExpired = fmt.Sprintf("SELECT %s FROM %s INDEXED BY %s_sweep WHERE %s AND completed_at IS NOT NULL AND %s < ", info, t, t, terminalIn, expiresAt)
		// The held records only, through the held index (see PostgreSQL's).
		q.recover = fmt.Sprintf(`UPDATE %s INDEXED BY %s_held SET %s
WHERE %s AND NOT EXISTS (SELECT 1 FROM %s l WHERE l.owner = %s.owner)`, t, t, abandon(1), held, s.leases(), t)
	}
	return q
}

// orphansQuery is Orphans' query, in two parts (arguments: self twice and
// now; then now, self and now). The records held by an owner with no
// live lease are read through the held index: what dead managers held,
// not what waits. The records held by no one and due by now are orphans
// only when no manager other than self holds a live lease (a condition on
// the leases alone, which PostgreSQL checks once, before it reads any
// record); they are read through the (status, seq) index, the waiting
// records among them: that happens once, at the last manager's Shutdown.
// The claim and scheduled indexes would not serve that part: they hold
// the resumable records only, and an active record that no one holds need
// not be resumable (one an older version left). On SQLite, INDEXED BY
// names both indexes: its planner, with statistics of a table of pending
// records, scanned the table for the second part. self "" is a manager
// that has ended its lease: nothing is its own.
func (s *Store) orphansQuery(info string) string {
	t := s.table
	cols := "seq, " + info
	heldBy, activeBy := "", ""
	if s.dialect == SQLite {
		heldBy, activeBy = fmt.Sprintf(" INDEXED BY %s_held", t), fmt.Sprintf(" INDEXED BY %s_status_seq", t)
	}
	return fmt.Sprintf(`SELECT %s FROM (
SELECT %s FROM %s%s WHERE %s AND (%s = '' OR owner <> %s)
  AND NOT EXISTS (SELECT 1 FROM %s l WHERE l.owner = %s.owner AND l.expires_at >= %s)
UNION ALL
SELECT %s FROM %s%s WHERE %s AND owner = '' AND (not_before IS NULL OR not_before <= %s)
  AND NOT EXISTS (SELECT 1 FROM %s l WHERE l.owner <> %s AND l.expires_at >= %s)
) AS o ORDER BY seq`, info,
		cols, t, heldBy, held, s.ph(1), s.ph(2), s.leases(), t, s.ph(3),
		cols, t, activeBy, activeIn, s.ph(4), s.leases(), s.ph(5), s.ph(6))
}

// listExpiredQuery is ListExpired's query for a time in Unix microseconds.
// The condition on expiresAt (which is completed_at when that is set) lets
// the sweep index serve it. The time is written into the query as a
// constant: the plan PostgreSQL caches for a prepared statement, the time
// unknown, reads the whole table by the primary key (for the order)
// however few records expired.
func (s *Store) listExpiredQuery(before int64) string {
	return s.q.listExpired + strconv.FormatInt(before, 10) + " ORDER BY seq"
}

// excluded returns "col = excluded.col, ..." for an upsert.
func excluded(cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c + " = excluded." + c
	}
	return strings.Join(out, ", ")
}

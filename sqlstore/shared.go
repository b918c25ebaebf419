package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/apcore-go/apcore"
)

// The SharedStore methods; the package doc gives their design.

// abandonedMessage is the error of a record Recover ends failed.
const abandonedMessage = "abandoned: the manager running it stopped (its lease lapsed) before it ended"

// Insert saves a new record, with what is kept beside it, only while fewer
// than limit records are active: one statement, atomic with the count. A
// record with a unique key is inserted ON CONFLICT DO NOTHING on the
// unique key index, which holds the keys of the pending, running and
// completed records; when that saves nothing, one lookup in that index
// finds the holder, returned as a *apcore.DuplicateError.
func (s *Store) Insert(ctx context.Context, task apcore.StoredTask, limit int) (bool, error) {
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	return s.insertOn(ctx, s.db, task, limit)
}

// insertOn is Insert's work on q: the Store's own *sql.DB, or a *sql.Tx
// begun on it (a caller's transaction: the record is saved when, and only
// if, that transaction commits). It takes no write turn (see write): in a
// caller's transaction, which may already hold SQLite's write lock, that
// turn could wait for a writer that waits for the lock. On q other than
// s.db a deadlock is not tried again: PostgreSQL has aborted the
// transaction.
func (s *Store) insertOn(ctx context.Context, q execer, task apcore.StoredTask, limit int) (bool, error) {
	if err := s.checkRecord(&task.Info); err != nil {
		return false, err
	}
	if !task.Info.Status.IsActive() {
		return false, invalid(fmt.Sprintf("sqlstore: Insert of task %s in state %s; a new task is pending or running", task.Info.TaskID, task.Info.Status))
	}
	if limit <= 0 {
		return false, nil
	}
	a, err := infoArgs(&task.Info)
	if err != nil {
		return false, err
	}
	b, err := sharedArgs(&task)
	if err != nil {
		return false, err
	}
	a = append(append(a, b...), limit)
	id, key := task.Info.TaskID, clean(task.Info.UniqueKey)
	// dup looks up the holder of the key after an insert that saved
	// nothing: a *apcore.DuplicateError when there is one.
	dup := func() error {
		if key == "" {
			return nil
		}
		holder, err := s.holder(ctx, q, key)
		if err != nil || holder == "" {
			return err
		}
		return &apcore.DuplicateError{TaskID: holder, Key: task.Info.UniqueKey}
	}
	// Nothing saved and no holder found: the limit refused the record, or
	// the holder ended (or went) between the insert and the lookup; one
	// more try tells them apart.
	for try := 0; ; try++ {
		ok, err := s.insertOnce(ctx, q, id, a, dup)
		if ok || err != nil || key == "" || try == 1 {
			return ok, err
		}
		if err := dup(); err != nil {
			return false, err
		}
	}
}

// insertOnce is one try of insertOn with its arguments a; dup is called
// before PostgreSQL's second statement, which would share the cap out
// anew, locking every slot, for a record that a holder of its key keeps
// out anyway.
func (s *Store) insertOnce(ctx context.Context, q execer, id string, a []any, dup func() error) (bool, error) {
	if s.dialect != PostgreSQL {
		return inserted(id)(s.execOn(ctx, q, s.st.insert, s.q.insert, a...))
	}
	// PostgreSQL: first the task's own slot; when it has no room under
	// this limit, share the cap out anew (see admitFunction). A deadlock
	// that PostgreSQL broke by aborting this statement is tried once more.
	slot := int16(slotOf(id))
	for try := 0; ; try++ {
		ok, err := inserted(id)(s.execOn(ctx, q, s.st.insert, s.q.insert, append(a, slot)...))
		if err == nil && !ok {
			if err := dup(); err != nil {
				return false, err
			}
			ok, err = inserted(id)(s.execOn(ctx, q, s.st.insertShared, s.q.insertShared, a...))
		}
		if try == 0 && isDeadlock(err) && q == execer(s.db) {
			continue
		}
		return ok, err
	}
}

// holder returns the id of the record that holds key (pending, running or
// completed with it), or "" for none.
func (s *Store) holder(ctx context.Context, q execer, key string) (string, error) {
	var id string
	var row *sql.Row
	switch x := q.(type) {
	case *sql.Tx:
		st := x.StmtContext(ctx, s.st.holder)
		defer st.Close()
		row = st.QueryRowContext(ctx, key)
	case *sql.DB:
		if x == s.db {
			row = s.st.holder.QueryRowContext(ctx, key)
			break
		}
		row = q.QueryRowContext(ctx, s.q.holder, key)
	default:
		row = q.QueryRowContext(ctx, s.q.holder, key)
	}
	switch err := row.Scan(&id); {
	case errors.Is(err, sql.ErrNoRows):
		return "", nil
	case err != nil:
		return "", unavailable("look up unique key", err)
	}
	return id, nil
}

// execOn runs st, prepared on s.db from query, on q: as it is on s.db, in
// a *sql.Tx through StmtContext, and on anything else as query's text.
func (s *Store) execOn(ctx context.Context, q execer, st *sql.Stmt, query string, args ...any) (sql.Result, error) {
	switch q := q.(type) {
	case *sql.DB:
		if q == s.db && st != nil {
			return st.ExecContext(ctx, args...)
		}
	case *sql.Tx:
		if st != nil {
			ts := q.StmtContext(ctx, st)
			defer ts.Close()
			return ts.ExecContext(ctx, args...)
		}
	}
	return q.ExecContext(ctx, query, args...)
}

// inserted returns what reads the outcome of task id's insert: whether it
// saved the record, or the error (GENERAL_INVALID_INPUT for an id that is
// taken).
func inserted(id string) func(res sql.Result, err error) (bool, error) {
	return func(res sql.Result, err error) (bool, error) {
		if err != nil && isDuplicate(err) {
			return false, invalid(fmt.Sprintf("sqlstore: task %s already exists", id))
		}
		return affected(res, err, "insert "+id)
	}
}

// slotOf is the slot a task's insert tries first on PostgreSQL: a hash of
// its id, so that concurrent inserts spread over the slots.
func slotOf(taskID string) int {
	h := fnv.New32a()
	h.Write([]byte(taskID))
	return int(h.Sum32() % pgSlots)
}

// Update writes the record, its owner and not_before if the stored record
// is active and held by holder: one conditional UPDATE. On PostgreSQL,
// Updates made at the same time share one statement (see batch.go), each
// with its own condition.
func (s *Store) Update(ctx context.Context, task apcore.StoredTask, holder string) (bool, error) {
	if err := s.checkRecord(&task.Info); err != nil {
		if s.storableID(task.Info.TaskID) {
			return false, err
		}
		return false, nil // no such record can exist
	}
	a, err := infoArgs(&task.Info)
	if err != nil {
		return false, err
	}
	// the columns after task_id, owner, not_before, due, task_id, holder
	a = append(a[1:], clean(task.Owner), micros(task.NotBefore), dueOf(task.NotBefore, task.Info.SubmittedAt), a[0], clean(holder))
	if s.dialect == PostgreSQL {
		return s.updateBatched(ctx, task.Info.TaskID, a)
	}
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	res, err := s.st.update.ExecContext(ctx, a...)
	return affected(res, err, "update "+task.Info.TaskID)
}

// Claim hands req.Owner up to req.Limit due resumable records held by no
// one (of req.Modules, when it is not nil), higher priority first and then
// oldest first, in one UPDATE ... RETURNING, after one that promotes the
// waiting records whose time has come (at most 1,000 a Claim, the
// earliest first).
func (s *Store) Claim(ctx context.Context, req apcore.ClaimRequest) ([]apcore.StoredTask, error) {
	owner, n := req.Owner, req.Limit
	if owner == "" {
		return nil, invalid("sqlstore: Claim needs an owner")
	}
	if n <= 0 || (req.Modules != nil && len(req.Modules) == 0) {
		return nil, nil
	}
	at := req.Now.UnixMicro()
	probe, claim := s.st.claimAny, s.st.claim
	var mods any
	if req.Modules != nil {
		probe, claim = s.st.claimAnyIn, s.st.claimIn
		var err error
		if mods, err = s.modulesArg(req.Modules); err != nil {
			return nil, invalid(fmt.Sprintf("sqlstore: Claim: %v", err))
		}
	}
	if probe != nil {
		args := []any{at}
		if mods != nil {
			args = append(args, mods)
		}
		args = append(args, at)
		var one int
		switch err := probe.QueryRowContext(ctx, args...).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			return nil, nil
		case err != nil:
			return nil, unavailable("claim", err)
		}
	}
	done, err := s.write(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	if _, err := s.st.promote.ExecContext(ctx, at, promoteBatch); err != nil {
		return nil, unavailable("claim: promote", err)
	}
	var args []any
	switch {
	case s.dialect == PostgreSQL && mods == nil:
		args = []any{clean(owner), at, at, n}
	case s.dialect == PostgreSQL:
		args = []any{clean(owner), at, at, n, mods}
	case mods == nil: // SQLite, positional: the lease check's owner and time come before the limit
		args = []any{clean(owner), at, at, clean(owner), at, n}
	default: // and the module ids after due's time
		args = []any{clean(owner), at, at, mods, clean(owner), at, n}
	}
	rows, err := claim.QueryContext(ctx, args...)
	if err != nil {
		return nil, unavailable("claim", err)
	}
	defer rows.Close()
	var out []apcore.StoredTask
	var seqs []int64
	for rows.Next() {
		seq, st, err := scanStored(rows)
		if err != nil {
			return nil, unavailable("claim", err)
		}
		out, seqs = append(out, st), append(seqs, seq)
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("claim", err)
	}
	sortBySeq(seqs, out)
	return out, nil
}

// promoteBatch is how many waiting records a Claim marks due at most, the
// first by not_before: a claim reads at most this many of them, however
// many came due at once (the rest are promoted by the Claims that follow).
// Among the records promoted and those ready, a Claim takes the higher
// priorities first.
const promoteBatch = 1000

// Renew sets req.Owner's lease to end at req.Expires; without req.Create,
// only if the lease is still there.
func (s *Store) Renew(ctx context.Context, req apcore.LeaseRequest) (bool, error) {
	owner, expires := clean(req.Owner), req.Expires.UnixMicro()
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	if req.Create {
		if _, err := s.st.renewCreate.ExecContext(ctx, owner, expires); err != nil {
			return false, unavailable("create lease", err)
		}
		return true, nil
	}
	res, err := s.st.renew.ExecContext(ctx, expires, owner)
	return affected(res, err, "renew lease")
}

// Release ends owner's lease.
func (s *Store) Release(ctx context.Context, owner string) error {
	done, err := s.write(ctx)
	if err != nil {
		return err
	}
	defer done()
	if _, err := s.db.ExecContext(ctx, s.q.release, clean(owner)); err != nil {
		return unavailable("release lease", err)
	}
	return nil
}

// Recover ends the leases that ended before now, and resets (resumable) or
// abandons (the others) the active records their owners, and owners with
// no lease, held: one statement on PostgreSQL, one transaction on SQLite.
func (s *Store) Recover(ctx context.Context, now time.Time) (int, error) {
	at := now.UnixMicro()
	args := []any{at, abandonedMessage, string(apcore.CodeTaskAbandoned)}
	if s.dialect == PostgreSQL {
		res, err := s.db.ExecContext(ctx, s.q.recover, args...)
		if err != nil {
			return 0, unavailable("recover", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, unavailable("recover", err)
		}
		return int(n), nil
	}
	done, err := s.write(ctx)
	if err != nil {
		return 0, err
	}
	defer done()
	var n int64
	err = s.inTx(ctx, "recover", func(tx execer) error {
		if _, err := tx.ExecContext(ctx, s.q.deleteLapsed, at); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q.recover, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), err
}

// Lost returns the ids among ids that owner no longer holds while active,
// with one query.
func (s *Store) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	arg, err := s.lostArg(ids)
	if err != nil {
		return nil, invalid(fmt.Sprintf("sqlstore: Lost: %v", err))
	}
	rows, err := s.st.lost.QueryContext(ctx, arg, clean(owner))
	if err != nil {
		return nil, unavailable("lost", err)
	}
	defer rows.Close()
	held := make(map[string]bool, len(ids))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, unavailable("lost", err)
		}
		held[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, unavailable("lost", err)
	}
	var lost []string
	for _, id := range ids {
		if !held[id] {
			lost = append(lost, id)
		}
	}
	return lost, nil
}

// Orphans returns the active records that no live manager holds, with one
// query.
func (s *Store) Orphans(ctx context.Context, q apcore.OrphanQuery) ([]apcore.TaskInfo, error) {
	at := q.Now.UnixMicro()
	self := clean(q.Self)
	// A record held by no one and due later (not_before after now) is not
	// an orphan: it waits for whichever manager runs when it is due.
	return s.query(ctx, "orphans", s.q.orphans, self, self, at, at, self, at)
}

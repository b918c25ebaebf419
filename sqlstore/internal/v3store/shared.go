package v3store

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
// than limit records are active: one statement, atomic with the count.
func (s *Store) Insert(ctx context.Context, task apcore.StoredTask, limit int) (bool, error) {
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
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	id := task.Info.TaskID
	if s.dialect != PostgreSQL {
		return inserted(id)(s.st.insert.ExecContext(ctx, a...))
	}
	// PostgreSQL: first the task's own slot; when it has no room under
	// this limit, share the cap out anew (see admitFunction). A deadlock
	// that PostgreSQL broke by aborting this statement is tried once more.
	slot := int16(slotOf(id))
	for try := 0; ; try++ {
		ok, err := inserted(id)(s.st.insert.ExecContext(ctx, append(a, slot)...))
		if err == nil && !ok {
			ok, err = inserted(id)(s.st.insertShared.ExecContext(ctx, a...))
		}
		if try == 0 && isDeadlock(err) {
			continue
		}
		return ok, err
	}
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
// is active and held by holder: one conditional UPDATE.
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
	// twelve columns after task_id, owner, not_before, task_id, holder
	a = append(a[1:], clean(task.Owner), micros(task.NotBefore), a[0], clean(holder))
	done, err := s.write(ctx)
	if err != nil {
		return false, err
	}
	defer done()
	res, err := s.st.update.ExecContext(ctx, a...)
	return affected(res, err, "update "+task.Info.TaskID)
}

// Claim hands req.Owner up to req.Limit due resumable records held by no
// one (of req.Modules, when it is not nil), oldest first, in one UPDATE ...
// RETURNING.
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
	return s.query(ctx, "orphans", s.q.orphans, self, self, self, at, at)
}

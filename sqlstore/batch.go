package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// On PostgreSQL, Updates that callers make at the same time go to the
// database together, in one statement: one round trip, one statement's
// parse, plan and commit, and one pool connection for the batch instead
// of one of each per Update. (Workers ending their tasks at once, a
// backlog's drain say, make most of a manager's writes.) The caller that
// finds no batch on its way starts a sender goroutine with its own Update;
// those that come while a batch is on its way queue, and when it is back
// the sender takes the queue, up to maxBatch Updates of distinct records,
// as the next batch, until the queue is empty and the sender ends. So one
// batch of a Store is on its way at a time, and an Update is sent after
// every Update of the same record queued before it has been answered.
//
// Each Update of a batch is the single Update's conditional write: its
// record changes only while it is active and held by that Update's
// holder, checked on the row under its lock, and the caller learns whether
// its own record changed (fencing, as SharedStore.Update says). Lock
// order: the statement locks the batch's records in order of task_id,
// then the count rows (slots) of the records it ends in order of id,
// before it changes any row; the single-record writes lock one record and
// then at most one slot, and the statements that lock several slots lock
// them in order of id (see admitFunction and the statement-level
// triggers), so two batches, of this manager or of another, cannot
// deadlock with each other nor with them. Recover, which ends the records
// of lapsed leases in the order of its rows, could still meet a batch of
// a manager whose lease lapsed on such a record; PostgreSQL then aborts
// one of the two, and a batch that it aborted is sent once more.
//
// Each caller waits for its own result or for its context to end,
// whichever comes first. A caller whose context ends while its Update
// waits in the queue takes it out: it is never sent. One whose Update is
// already on its way stops waiting at once, but the Update is not
// recalled: it may still be written, as any statement that a cancel
// overtakes on the network may be. A batch runs under the latest deadline
// of its callers' contexts (none if one of them has none).

// maxBatch bounds the Updates of one statement.
const maxBatch = 100

// updates is the queue of Updates waiting for the batch on its way.
type updates struct {
	mu      sync.Mutex
	sending bool       // a batch is on its way: a sender goroutine runs
	queue   []*pending // what waits for it
	// query is the statement of a batch, made by the first sender that
	// needs it (one sender runs at a time, and each starts under mu).
	query string
}

// pending is one Update, queued or in a batch.
type pending struct {
	ctx  context.Context
	id   string
	args []any // the record's columns after task_id, owner, not_before, due, task_id, holder (Update's statement)
	ok   bool
	err  error
	done chan struct{} // closed once ok and err are set
}

// updateBatched runs Update's statement with args, in a batch with the
// Updates of other callers (see updates).
func (s *Store) updateBatched(ctx context.Context, id string, args []any) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, unavailable("update "+id, err)
	}
	p := &pending{ctx: ctx, id: id, args: args, done: make(chan struct{})}
	u := &s.updates
	u.mu.Lock()
	if u.sending {
		u.queue = append(u.queue, p)
		u.mu.Unlock()
	} else {
		u.sending = true
		u.mu.Unlock()
		go s.sender([]*pending{p})
	}
	select {
	case <-p.done:
		return p.ok, p.err
	case <-ctx.Done():
	}
	u.mu.Lock()
	if i := slices.Index(u.queue, p); i >= 0 { // still queued: never sent
		u.queue = slices.Delete(u.queue, i, i+1)
	}
	u.mu.Unlock()
	select {
	case <-p.done: // answered meanwhile
		return p.ok, p.err
	default:
		return false, unavailable("update "+id, ctx.Err())
	}
}

// sender sends batch, then each batch that gathered meanwhile, and ends
// when nothing is queued.
func (s *Store) sender(batch []*pending) {
	u := &s.updates
	for {
		s.send(batch)
		u.mu.Lock()
		if len(u.queue) == 0 {
			u.sending = false
			u.mu.Unlock()
			return
		}
		batch = nextBatch(&u.queue)
		u.mu.Unlock()
	}
}

// nextBatch takes the next batch off the queue: up to maxBatch Updates of
// distinct records, in queue order; an Update of a record already in the
// batch stays queued, in its place, for a later batch.
func nextBatch(queue *[]*pending) []*pending {
	q := *queue
	batch := make([]*pending, 0, min(len(q), maxBatch))
	seen := make(map[string]bool, cap(batch))
	rest := q[:0]
	for _, p := range q {
		if len(batch) < maxBatch && !seen[p.id] {
			seen[p.id] = true
			batch = append(batch, p)
			continue
		}
		rest = append(rest, p)
	}
	clear(q[len(rest):])
	*queue = rest
	return batch
}

// send runs a batch and hands each caller its result: a batch of one is
// the prepared Update; a larger one, one statement (updateMany).
func (s *Store) send(batch []*pending) {
	ctx, cancel := batchContext(batch)
	defer cancel()
	if len(batch) == 1 {
		p := batch[0]
		res, err := s.st.update.ExecContext(ctx, p.args...)
		p.ok, p.err = affected(res, err, "update "+p.id)
		close(p.done)
		return
	}
	taken, err := s.updateMany(ctx, batch)
	if err != nil && isDeadlock(err) {
		taken, err = s.updateMany(ctx, batch)
	}
	for _, p := range batch {
		if err != nil {
			p.err = unavailable("update "+p.id, err)
		} else {
			p.ok = taken[p.id]
		}
		close(p.done)
	}
}

// batchContext is the context a batch runs in: without its callers'
// cancellation, each of which only stops its own wait, and with the latest
// of their deadlines, or none when one of them has none.
func batchContext(batch []*pending) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range batch {
		d, ok := p.ctx.Deadline()
		if !ok {
			return context.WithoutCancel(batch[0].ctx), func() {}
		}
		if d.After(latest) {
			latest = d
		}
	}
	return context.WithDeadline(context.WithoutCancel(batch[0].ctx), latest)
}

// updateMany makes the Updates of batch in one statement, and returns the
// ids of the records it changed. The records go as one JSON array of
// arrays, each holding task_id, holder and Update's columns in order.
func (s *Store) updateMany(ctx context.Context, batch []*pending) (map[string]bool, error) {
	recs := make([][]any, len(batch))
	for i, p := range batch {
		// Update's order: the columns after task_id, owner, not_before,
		// due, task_id, holder.
		a := p.args
		n := len(a)
		rec := make([]any, 0, n)
		rec = append(rec, a[n-2], a[n-1])
		for _, v := range a[:n-2] {
			rec = append(rec, jsonValue(v))
		}
		recs[i] = rec
	}
	arg, err := json.Marshal(recs)
	if err != nil {
		return nil, err
	}
	if s.updates.query == "" {
		s.updates.query = s.updateManyQuery()
	}
	rows, err := s.db.QueryContext(ctx, s.updates.query, string(arg))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	taken := make(map[string]bool, len(batch))
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		taken[id] = true
	}
	return taken, rows.Err()
}

// batchColumns are the fields of a batch's records: task_id and holder,
// then the columns that Update writes, in its order.
var batchColumns = append(append([]string{"task_id", "holder"}, infoColumns[1:]...), "owner", "not_before", "due")

// jsonValue is an argument of Update's statement as a JSON value: NULL
// as null.
func jsonValue(v any) any {
	switch x := v.(type) {
	case sql.NullString:
		if !x.Valid {
			return nil
		}
		return x.String
	case sql.NullInt64:
		if !x.Valid {
			return nil
		}
		return x.Int64
	}
	return v
}

// updateManyQuery is the statement of a batch of Updates (PostgreSQL),
// whose records are one JSON array of arrays ($1): the records that are active and
// held by their Update's holder locked in order of task_id; the count
// rows of those it ends locked in order of id; then the update, with
// Update's condition, returning the ids it changed. The locks are taken
// by the materialized CTEs, which the condition's sub-select runs before
// the first row is changed.
func (s *Store) updateManyQuery() string {
	t := s.table
	defs := make([]string, len(batchColumns))
	for i, c := range batchColumns {
		typ := pgTypes[c]
		if c == "holder" {
			typ = "text"
		}
		defs[i] = fmt.Sprintf("(e->>%d)::%s AS %s", i, typ, c)
	}
	sets := make([]string, 0, len(batchColumns)-2)
	for _, c := range batchColumns[2:] {
		sets = append(sets, c+" = v."+c)
	}
	active := "t." + activeIn
	return fmt.Sprintf(`WITH v AS MATERIALIZED (SELECT %s FROM jsonb_array_elements($1::jsonb) AS e),
held AS MATERIALIZED (SELECT t.slot, v.status FROM %s t JOIN v ON t.task_id = v.task_id AND t.owner = v.holder
  WHERE %s ORDER BY t.task_id FOR UPDATE OF t),
counts AS MATERIALIZED (SELECT id FROM %s WHERE id IN (SELECT slot FROM held WHERE status NOT IN ('pending', 'running')) ORDER BY id FOR UPDATE)
UPDATE %s t SET %s
FROM v WHERE t.task_id = v.task_id AND %s AND t.owner = v.holder AND (SELECT count(*) FROM counts) >= 0
RETURNING t.task_id`, strings.Join(defs, ", "), t, active, s.slots(), t, strings.Join(sets, ", "), active)
}

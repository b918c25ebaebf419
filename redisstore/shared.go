package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
)

// The apcore.SharedStore methods. Each is one script (see scripts.go), so
// each is atomic with respect to the others, across processes, and costs
// one round trip, which Updates made at the same time share (batch.go).

// spec is what a resumable task keeps beside its record, in the spec hash.
type spec struct {
	Inputs  json.RawMessage    `json:"inputs,omitempty"`
	Retry   apcore.RetryConfig `json:"retry"`
	Timeout time.Duration      `json:"timeout,omitempty"`
	Trace   map[string]string  `json:"trace,omitempty"`
}

// checkOwner refuses an owner id the meta and held indexes cannot hold.
func checkOwner(owner string) error {
	if strings.IndexByte(owner, 0) >= 0 {
		return invalid(fmt.Sprintf("redisstore: owner id %q holds a NUL byte", owner))
	}
	return nil
}

// Insert saves a new record, with what is kept beside it, only while fewer
// than limit records are active, atomically with that count (the size of
// the held index). It reports false, saving nothing, at the limit. An id
// that is taken is GENERAL_INVALID_INPUT.
//
// With task.Info.UniqueKey set, the same script first looks the key up (in
// the "uniq" and "ukey" hashes, see scripts.go): when a pending, running or
// completed record holds it, Insert saves nothing and returns false with
// an *apcore.DuplicateError naming that record, whatever the limit. So one
// record is made however many Inserts with the key race, from however many
// processes.
//
// Only a resumable task keeps its inputs, retry policy, timeout and trace
// (in the spec hash), since only Claim hands them back; a task held by its
// manager keeps its owner and NotBefore in the meta hash.
func (s *Store) Insert(ctx context.Context, task apcore.StoredTask, limit int) (bool, error) {
	info := &task.Info
	if err := checkRecord(info); err != nil {
		return false, err
	}
	if err := checkOwner(task.Owner); err != nil {
		return false, err
	}
	if !info.Status.IsActive() {
		return false, invalid(fmt.Sprintf("redisstore: Insert of task %s in state %s; a new task is pending or running", info.TaskID, info.Status))
	}
	data, err := s.encode(info)
	if err != nil {
		return false, err
	}
	resumable, sp := "", []byte(nil)
	if task.Resumable {
		resumable = "r"
		if sp, err = json.Marshal(spec{Inputs: task.Inputs, Retry: task.Retry, Timeout: task.Timeout, Trace: task.Trace}); err != nil {
			return false, &apcore.Error{Code: apcore.CodeInvalidInput, Message: "redisstore: the inputs of task " + info.TaskID + " are not JSON", Cause: err}
		}
	}
	v, err := s.run(ctx, inserts, s.recordKeys(info.TaskID),
		s.base, info.TaskID, data, string(info.Status), task.Owner, resumable, micros(task.NotBefore), sp, limit, time.Now().UnixMicro(),
		info.UniqueKey, info.Priority).Result()
	if err != nil {
		return false, unavailable("insert "+info.TaskID, err)
	}
	n, isInt := v.(int64)
	if !isInt {
		holder, ok := v.(string)
		if !ok || info.UniqueKey == "" {
			return false, unavailable("insert "+info.TaskID, fmt.Errorf("unexpected reply %#v", v))
		}
		return false, &apcore.DuplicateError{TaskID: holder, Key: info.UniqueKey}
	}
	if n < 0 {
		return false, invalid(fmt.Sprintf("redisstore: task %s already exists", info.TaskID))
	}
	s.saw(int64(n))
	return n > 0, nil
}

// Update writes task.Info, task.Owner and task.NotBefore only if the stored
// record is active and held by holder, and reports whether it wrote. A
// terminal record whose result cannot be encoded (or is larger than
// WithMaxRecordBytes) is written as failed with GENERAL_INVALID_INPUT
// instead, under the same condition, and Update reports false, so that the
// manager reads back the stored outcome: the task never stays running, and
// every reader sees the same record.
//
// Updates that callers make at the same time go to Redis in one pipeline
// (see batch.go). Update honours ctx: when ctx ends before Redis has
// answered, Update returns at once with an error matching ctx's error
// (and apcore.ErrStoreUnavailable). An Update still waiting for its turn
// is then never sent; one already on its way is not recalled, so it may
// still be written, as with any request that a cancel overtakes.
func (s *Store) Update(ctx context.Context, task apcore.StoredTask, holder string) (bool, error) {
	info := &task.Info
	if err := checkRecord(info); err != nil {
		return false, err
	}
	if err := checkOwner(task.Owner); err != nil {
		return false, err
	}
	data, err := s.encode(info)
	substituted := false
	if err != nil {
		if !unkeepable(info, err) {
			return false, err
		}
		if data, err = s.encode(info); err != nil {
			return false, err
		}
		substituted = true
	}
	ttl := time.Duration(s.leaseTTL.Load())
	if ttl <= 0 {
		ttl = 30 * time.Second // the manager's default
	}
	now := time.Now()
	n, err := s.runUpdate(ctx, s.recordKeys(info.TaskID), []any{
		s.base, info.TaskID, data, string(info.Status), task.Owner, micros(task.NotBefore), doneScore(info), holder,
		s.seen.Load(), now.Add(ttl).UnixMicro(), now.UnixMicro()})
	if err != nil {
		return false, unavailable("update "+info.TaskID, err)
	}
	return n >= 1 && !substituted, nil
}

// claimLook is how many ids of the ready index a Claim limited to some
// modules looks at, at most (see claimScript).
const claimLook = 1000

// claimMove is how many due tasks a Claim moves from the later index to
// the ready one, at most (see claimScript).
const claimMove = 1000

// Claim hands req.Owner up to req.Limit resumable records that are
// pending, held by no one and due (NotBefore not after req.Now), higher
// Info.Priority first and, within a priority, oldest first (by insertion):
// each becomes running and held by req.Owner, StartedAt set to req.Now if
// unset. The order is the ready index's (scored by priority and sequence
// number): a Claim pops its head, and does not sort what waits. A task
// whose NotBefore is after req.Now (scheduled WithRunAt, or in its retry
// backoff) waits in the later index, by time, and costs a Claim nothing
// until it is due; a Claim moves at most 1,000 due tasks from there to the
// ready index, the first due first, so that when more than that many fall
// due between two Claims the ones due last join the order a Claim or a few
// later.
//
// With req.Modules it takes only tasks of those modules, and the script
// leaves the others where they wait; it looks at the first 1,000 waiting
// tasks in that order at most, so tasks of modules that no live manager
// runs, once more than that many have piled up ahead, hold back the tasks
// behind them until a manager that runs them takes some.
func (s *Store) Claim(ctx context.Context, req apcore.ClaimRequest) ([]apcore.StoredTask, error) {
	owner, n := req.Owner, req.Limit
	if owner == "" {
		return nil, invalid("redisstore: Claim needs an owner")
	}
	if err := checkOwner(owner); err != nil {
		return nil, err
	}
	if n <= 0 || (req.Modules != nil && len(req.Modules) == 0) {
		return nil, nil
	}
	now := time.UnixMicro(req.Now.UnixMicro()).UTC()
	args := []any{s.base, owner, n, micros(now), wireSeconds(now), orDefault(s.steps.move, claimMove)}
	if req.Modules != nil {
		args = append(args, "1", s.claimLook())
		for _, m := range req.Modules {
			args = append(args, m)
		}
	}
	rows, err := claimScript.Run(ctx, s.rdb, s.anyKey, args...).Slice()
	if err != nil {
		return nil, unavailable("claim", err)
	}
	out := make([]apcore.StoredTask, 0, len(rows))
	for _, row := range rows {
		cols, ok := row.([]any)
		if !ok || len(cols) != 4 {
			return nil, unavailable("claim", fmt.Errorf("unexpected reply %#v", row))
		}
		rec, _ := cols[0].(string)
		sp, _ := cols[1].(string)
		nb, _ := cols[2].(string)
		if seq, err := strconv.ParseInt(fmt.Sprint(cols[3]), 10, 64); err == nil {
			s.saw(seq)
		}
		st := apcore.StoredTask{Owner: owner, Resumable: true}
		if err := decodeRecord([]byte(rec), &st.Info); err != nil {
			return nil, unavailable("decode a claimed record", err)
		}
		if sp != "" {
			var x spec
			if err := decodeSpec([]byte(sp), &x); err != nil {
				return nil, unavailable("decode the spec of "+st.Info.TaskID, err)
			}
			st.Inputs, st.Retry, st.Timeout, st.Trace = x.Inputs, x.Retry, x.Timeout, x.Trace
		}
		if nb != "" {
			us, err := strconv.ParseInt(nb, 10, 64)
			if err != nil {
				return nil, unavailable("decode the not_before of "+st.Info.TaskID, err)
			}
			st.NotBefore = time.UnixMicro(us).UTC()
		}
		out = append(out, st)
	}
	return out, nil
}

// Renew sets req.Owner's lease to end at req.Expires. With req.Create it
// makes the lease; without, it reports false when the owner has no lease
// any more.
func (s *Store) Renew(ctx context.Context, req apcore.LeaseRequest) (bool, error) {
	c := "0"
	if req.Create {
		c = "1"
	}
	n, err := renewScript.Run(ctx, s.rdb, s.anyKey, s.base, req.Owner, req.Expires.UnixMicro(), c, s.seen.Load()).Int()
	if err != nil {
		return false, unavailable("renew lease", err)
	}
	if ttl := time.Until(req.Expires); ttl > 0 {
		s.leaseTTL.Store(int64(ttl))
	}
	return n == 1, nil
}

// Release ends owner's lease.
func (s *Store) Release(ctx context.Context, owner string) error {
	if err := s.rdb.ZRem(ctx, s.leases, owner).Err(); err != nil {
		return unavailable("release lease", err)
	}
	return nil
}

// abandonedError is the error of a record Recover fails, as JSON.
var abandonedError, _ = json.Marshal("abandoned: the manager running it stopped (its lease lapsed) before it ended")

// Recover ends the leases that ended before now, and what is held by an
// owner without a lease: each active record becomes pending and held by no
// one if it is resumable, and failed with TASK_ABANDONED otherwise. It
// returns how many records it changed.
func (s *Store) Recover(ctx context.Context, now time.Time) (int, error) {
	now = time.UnixMicro(now.UnixMicro()).UTC()
	n, err := s.run(ctx, recovers, s.anyKey, s.base, micros(now), wireSeconds(now), abandonedError).Int()
	if err != nil {
		return 0, unavailable("recover", err)
	}
	return n, nil
}

// Lost returns the ids among ids whose record owner no longer holds while it
// is active.
func (s *Store) Lost(ctx context.Context, owner string, ids []string) ([]string, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	argv := make([]any, 0, len(ids)+3)
	argv = append(argv, s.base, owner, s.seen.Load())
	for _, id := range ids {
		argv = append(argv, id)
	}
	lost, err := s.run(ctx, losts, s.anyKey, argv...).StringSlice()
	if err != nil {
		return nil, unavailable("lost", err)
	}
	return lost, nil
}

// Orphans returns the active records that no live manager holds, in
// insertion order.
func (s *Store) Orphans(ctx context.Context, q apcore.OrphanQuery) ([]apcore.TaskInfo, error) {
	recs, err := orphansScript.Run(ctx, s.rdb, s.anyKey, s.base, q.Self, q.Now.UnixMicro()).StringSlice()
	if err != nil {
		return nil, unavailable("orphans", err)
	}
	out := make([]apcore.TaskInfo, 0, len(recs))
	for _, rec := range recs {
		var t apcore.TaskInfo
		if err := decodeRecord([]byte(rec), &t); err != nil {
			return nil, unavailable("decode an orphan", err)
		}
		out = append(out, t)
	}
	return out, nil
}

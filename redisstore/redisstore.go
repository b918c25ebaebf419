// Package redisstore is an apcore.TaskStore in Redis: task records that
// several managers (several replicas of a service) share as one task
// manager, and that services written with the other apcore SDKs can read.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store, err := redisstore.New(client)
//	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
//
// Any redis.UniversalClient works: a single node, a Sentinel-managed
// failover client, or a cluster client. Each record is a string key, prefix
// + task id (prefix "apcore:tasks:" by default), holding the protocol's
// JSON wire format. Beside the records the store keeps, under prefix +
// "_idx:", in layout 1 (the default; see LayoutVersion):
//
//	order                  sorted set: every id, scored by insertion sequence
//	seq                    the insertion sequence counter
//	meta                   hash: id -> "status|seq|r|not_before|owner"
//	held                   sorted set (by name): "owner\x00id" per active record
//	status:completed etc.  sorted sets: each terminal state's ids, scored by reference time (µs):
//	                       completed_at, or submitted_at without one
//	spec                   hash: a resumable task's inputs, retry policy, timeout, trace
//	prio                   hash: an active resumable task's priority, when not 0
//	later                  sorted set: resumable tasks held by no one and not yet due, by not_before (µs)
//	ready                  sorted set: resumable tasks held by no one and due, by rank:
//	                       sequence - priority × 2^45 (higher priority first, then oldest)
//	uniq                   hash: unique key -> id of the last record inserted with it
//	ukey                   hash: id -> unique key, per record inserted with one
//	leases                 sorted set: owner -> end of its lease (µs)
//	layout                 the layout version (LayoutVersion), which New checks
//
// Layout 2 (WithLayout(2) for a new store, Migrate for one of layout 1)
// keeps a completed record in about 520 bytes of Redis memory instead of
// 830 (BenchmarkKeptBytes; asynq's is about 550). It has no "order" and
// no "status:<state>"; an ended record has no "meta" entry, and its
// record ends with its sequence number ("_seq", which readers of the wire
// format ignore); the insertion order and the terminal states are in
// buckets of 128 sequence numbers, which Redis keeps compact (listpacks):
//
//	o:<b>                  sorted set: bucket b's ids (sequence numbers 128b to 128b+127),
//	                       scored by sequence number
//	o                      sorted set: every bucket b of the order index, scored by b
//	d:completed:<b> etc.   sorted sets: the sequence numbers of bucket b's records in
//	                       each terminal state, scored by reference time (µs)
//	d:completed etc.       sorted sets: each state's buckets, scored by their lowest
//	                       reference time, which Sweep and ListExpired read up to their bound
//	n                      hash: how many records in all, and in each terminal state
//	migrating              present while Migrate runs
//
// Every other key is as in layout 1 (see layout2.go).
//
// A task scheduled for later (apcore.WithRunAt on a resumable task) waits
// in "later" and costs nothing until it is due: a Claim reads "later" by
// score up to its clock, so 100,000 scheduled tasks waiting leave a
// Claim's time as it was (BenchmarkClaimWithScheduledWaiting), and moves
// what fell due to "ready" (at most 1,000 a Claim). A Claim takes the head
// of "ready": higher priority first, then insertion order, without sorting
// what waits. An Insert with a unique key looks it up in "uniq" and
// checks the named record's state in the same script (a pending, running
// or completed record holds the key; see Store.Insert), so racing Inserts
// of one key make one record, from any number of processes.
//
// New records the layout version in "layout", and refuses a store whose
// recorded version is newer than LayoutVersion, as a newer version of this
// package made it (see LayoutVersion). A store is read and written in the
// layout it has recorded, whatever WithLayout says.
//
// Every write is one Lua script, which Redis runs atomically, so an index
// never disagrees with the records, and every method of apcore.SharedStore
// is one script and one round trip (see scripts.go); Updates that
// callers make at the same time share one (see batch.go).
//
// With a cluster client the prefix becomes a hash tag ("{apcore:tasks}:"),
// so that all of one store's keys live in one slot, as multi-key scripts
// require: one store lives on one master. Connection failures are errors
// matching apcore.ErrStoreUnavailable that wrap go-redis's error; New
// itself fails so, naming the address, when Redis does not answer a PING
// within PingTimeout. Every method honours its context, Update included.
//
// Losing data. Redis replicates asynchronously, so a Sentinel or cluster
// failover loses the writes the old master had acknowledged but not yet
// sent to its replica (on a healthy link, those of the last moments before
// it died): an accepted Submit's record, a transition (a completed task
// reads back running or pending, and, once its owner's lease ends, another
// manager's Recover fails it TASK_ABANDONED), a cancel (the task runs on),
// a Claim (the task may run twice), or a delete (the record comes back).
// Redis restarting empty (no persistence) or FLUSHALL loses everything.
// The store tells such a loss from a delete by its insertion counter, which
// only grows: while the counter is below the highest value a Store has
// seen, Lost does not report that Store's vanished records (so their
// owner does not end them cancelled), Renew makes a vanished lease anew,
// and Update writes a vanished record again, held by the writer. Records
// of tasks that had ended before the loss, which no owner holds any more,
// stay lost.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix New uses unless WithPrefix says otherwise.
const DefaultPrefix = "apcore:tasks:"

// DefaultMaxRecordBytes is the largest record the store writes unless
// WithMaxRecordBytes says otherwise: Redis's default proto-max-bulk-len.
const DefaultMaxRecordBytes = 512 << 20

// Option configures New.
type Option func(*config)

type config struct {
	prefix   string
	hashTag  *bool
	maxBytes int
	layout   int
}

// WithPrefix sets the key prefix (default "apcore:tasks:").
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithHashTag forces (true) or prevents (false) wrapping the prefix in a
// cluster hash tag. By default it is on for a *redis.ClusterClient only,
// and it cannot be turned off for one.
func WithHashTag(on bool) Option { return func(c *config) { c.hashTag = &on } }

// WithMaxRecordBytes sets the size of the largest record the store writes
// (default DefaultMaxRecordBytes); set it to the server's
// proto-max-bulk-len when that is lower. A terminal write whose record is
// larger (a result too big to keep) is written as failed instead; see
// Store.Update.
func WithMaxRecordBytes(n int) Option { return func(c *config) { c.maxBytes = n } }

// DefaultLayout is the layout New gives a new store unless WithLayout
// says otherwise (see LayoutVersion).
const DefaultLayout = 1

// WithLayout sets the layout New gives a new store: 1 (DefaultLayout) or
// 2, which keeps an ended record in less memory (see LayoutVersion). It
// changes nothing for a store that has records or a recorded layout: the
// recorded layout wins, so a store of layout 2 is opened as one with or
// without this option, and a store of layout 1 stays so until Migrate
// moves it.
func WithLayout(n int) Option { return func(c *config) { c.layout = n } }

// Store is an apcore.TaskStore in Redis. It implements apcore.Counter,
// apcore.ConditionalSaver, apcore.Remover, apcore.SharedStore,
// apcore.JSONStore, apcore.Pager and apcore.Sweeper (see page.go). It is
// safe for concurrent use.
type Store struct {
	rdb      redis.UniversalClient
	base     string   // what every key starts with
	order    string   // the order index's key
	leases   string   // the leases index's key
	anyKey   []string // the KEYS of a script about no one record (see scripts.go)
	maxBytes int

	// seen is the highest insertion sequence number this Store has seen;
	// a counter below it means Redis lost its data (see wiped in
	// scripts.go). leaseTTL is the length of the last lease renewed.
	seen     atomic.Int64
	leaseTTL atomic.Int64

	updates updates // Updates on their way to Redis together (batch.go)

	// v2 is set when the store's layout is 2 (see layout2.go): New reads
	// it, and a Store whose store Migrate moves finds out at its next
	// script (see Store.run).
	v2 atomic.Bool

	// look is how many waiting tasks a Claim limited to some modules
	// looks at, at most: claimLook, or what a test sets.
	look int

	// steps, when a test sets them, replace the bounds of a listing or
	// sweep step (walkStep, gatherMax, heldStep, sweepStep; see page.go).
	steps steps
}

// claimLook returns how many waiting tasks a Claim limited to some modules
// looks at, at most.
func (s *Store) claimLook() int {
	if s.look > 0 {
		return s.look
	}
	return claimLook
}

// saw notes a sequence number this Store has seen.
func (s *Store) saw(seq int64) {
	for {
		cur := s.seen.Load()
		if seq <= cur || s.seen.CompareAndSwap(cur, seq) {
			return
		}
	}
}

var (
	_ apcore.TaskStore        = (*Store)(nil)
	_ apcore.Counter          = (*Store)(nil)
	_ apcore.ConditionalSaver = (*Store)(nil)
	_ apcore.Remover          = (*Store)(nil)
	_ apcore.SharedStore      = (*Store)(nil)
	_ apcore.JSONStore        = (*Store)(nil)
)

// indexTag marks the index keys; a task id may not start with it.
const indexTag = "_idx:"

// PingTimeout bounds the PING with which New checks that Redis answers.
const PingTimeout = 5 * time.Second

// New returns a store using client, once Redis answers a PING through it
// within PingTimeout. When it does not (no server at the address, a server
// that does not answer, a refused password), New fails with an error
// matching apcore.ErrStoreUnavailable (TASK_STORE_UNAVAILABLE) that names
// the address and wraps go-redis's error, rather than leaving the failure
// to the manager's first write. Bad options are GENERAL_INVALID_INPUT.
//
// New then reads the layout version recorded under the prefix (the key
// prefix + "_idx:layout"), and uses that layout. A store with none gets
// one recorded: WithLayout's (DefaultLayout, 1, without it) when the
// store is new, and 1 when it has records an earlier version of this
// package made (which recorded none), whose layout is 1. A store of a
// newer layout than LayoutVersion, which a newer version of this package
// made, is refused, changing nothing: New fails with an error matching
// apcore.ErrStoreUnavailable whose cause is a *LayoutError naming both
// versions.
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	s, layout, err := build(client, opts...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), PingTimeout)
	defer cancel()
	if err := client.Ping(ctx).Err(); err != nil {
		return nil, &apcore.Error{Code: apcore.CodeTaskStoreUnavailable,
			Message: fmt.Sprintf("redisstore.New: redis at %s does not answer", address(client)), Cause: err}
	}
	if err := s.checkLayout(ctx, layout); err != nil {
		return nil, err
	}
	return s, nil
}

// LayoutVersion is the newest version of the store's layout in Redis (its
// keys and what they hold, see the package doc) that this package reads
// and writes. New records the layout of a store that has none (see New
// and WithLayout), and refuses a store whose recorded version is higher.
// A version of this package that changes the layout in a way an earlier
// one would misread raises it.
//
// Version 1 is the first recorded, and the default. It reads every store
// an earlier version of this package made (which recorded none): it
// ranks a task of priority 0 in the ready index as they did, and a record
// they deleted that had a unique key (they had none) leaves nothing
// behind. While an earlier version still runs beside this one on a store,
// the tasks that it hands back to the ready index are ranked as of
// priority 0, and the unique keys of the records it deletes stay in the
// "uniq" hash until an Insert with the key replaces them (Insert checks
// that the record named there exists and has the key).
//
// Version 2 keeps an ended record in about 60% of the memory (see
// layout2.go): no meta entry, and its entries in the order and terminal
// indexes in buckets of 128 sequence numbers, which Redis encodes
// compactly. A version of this package that knows only version 1 refuses
// a store of version 2, so every manager on a store must run a version
// that knows it before the store is given it: a new store by WithLayout(2),
// an existing one by Migrate.
const LayoutVersion = 2

// LayoutError is the cause of New's error for a store whose recorded
// layout version is newer than this package's LayoutVersion, or is not a
// version at all.
type LayoutError struct {
	// Key is the key holding the version.
	Key string
	// Found is what the key holds.
	Found string
	// Known is LayoutVersion.
	Known int
}

// Error names both versions.
func (e *LayoutError) Error() string {
	if n, err := strconv.Atoi(e.Found); err == nil && n > 0 {
		return fmt.Sprintf("the store's layout version is %d (key %s), newer than version %d, the newest this package knows: "+
			"a newer version of github.com/apcore-go/apcore/redisstore made it; upgrade to one that knows version %d", n, e.Key, e.Known, n)
	}
	return fmt.Sprintf("the key %s holds %q, which is not a layout version (this package knows versions up to %d)", e.Key, e.Found, e.Known)
}

// layoutScript reads the store's layout version, and records one when
// there is none: ARGV[1] for a new store, 1 for one with records (its
// sequence counter is there). KEYS: the layout key, the sequence
// counter.
var layoutScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
v = ARGV[1]
if redis.call('EXISTS', KEYS[2]) == 1 then v = '1' end
redis.call('SET', KEYS[1], v)
return v
`)

// checkLayout is New's check of the layout version (see LayoutVersion);
// layout is the one to give a new store.
func (s *Store) checkLayout(ctx context.Context, layout int) error {
	key := s.base + indexTag + "layout"
	found, err := layoutScript.Run(ctx, s.rdb, []string{key, s.base + indexTag + "seq"}, layout).Text()
	if err != nil {
		return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable,
			Message: fmt.Sprintf("redisstore.New: reading the layout version at %s", address(s.rdb)), Cause: err}
	}
	if n, err := strconv.Atoi(found); err == nil && n > 0 && n <= LayoutVersion {
		s.v2.Store(n == 2)
		return nil
	}
	le := &LayoutError{Key: key, Found: found, Known: LayoutVersion}
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "redisstore.New", Cause: le}
}

// address names the server (or servers) client talks to, for New's error.
func address(client redis.UniversalClient) string {
	switch c := client.(type) {
	case *redis.Client:
		if a := c.Options().Addr; a != "FailoverClient" { // what go-redis puts there for a Sentinel-managed master
			return a
		}
		return "the master that the Sentinels name"
	case *redis.ClusterClient:
		return strings.Join(c.Options().Addrs, ",")
	case *redis.Ring:
		addrs := make([]string, 0, len(c.Options().Addrs))
		for _, a := range c.Options().Addrs {
			addrs = append(addrs, a)
		}
		slices.Sort(addrs)
		return strings.Join(addrs, ",")
	}
	return fmt.Sprintf("%T", client)
}

// build is New without the PING: it checks the options and makes the
// Store, with no I/O. It returns the layout to give a new store too.
func build(client redis.UniversalClient, opts ...Option) (*Store, int, error) {
	if client == nil {
		return nil, 0, invalid("redisstore.New: the client is nil")
	}
	cfg := config{prefix: DefaultPrefix, maxBytes: DefaultMaxRecordBytes, layout: DefaultLayout}
	for _, o := range opts {
		if o == nil {
			return nil, 0, invalid("redisstore.New: nil option")
		}
		o(&cfg)
	}
	if cfg.layout != 1 && cfg.layout != 2 {
		return nil, 0, invalid(fmt.Sprintf("redisstore: WithLayout(%d): the layouts are 1 and 2", cfg.layout))
	}
	if cfg.prefix == "" || strings.ContainsAny(cfg.prefix, "{}") {
		return nil, 0, invalid(fmt.Sprintf("redisstore: prefix %q: it must be non-empty and hold no braces", cfg.prefix))
	}
	if cfg.maxBytes <= 0 {
		return nil, 0, invalid(fmt.Sprintf("redisstore: WithMaxRecordBytes(%d): it must be more than 0", cfg.maxBytes))
	}
	_, cluster := client.(*redis.ClusterClient)
	tag := cluster
	if cfg.hashTag != nil {
		if cluster && !*cfg.hashTag {
			return nil, 0, invalid("redisstore: WithHashTag(false) with a cluster client: every key of a script must be in one slot")
		}
		tag = *cfg.hashTag
	}
	base := cfg.prefix
	if tag {
		base = "{" + strings.TrimSuffix(cfg.prefix, ":") + "}:"
	}
	idx := base + indexTag
	s := &Store{rdb: client, base: base, maxBytes: cfg.maxBytes}
	s.order, s.leases = idx+"order", idx+"leases"
	s.anyKey = []string{s.order}
	return s, cfg.layout, nil
}

// Name returns "RedisTaskStore".
func (s *Store) Name() string { return "RedisTaskStore" }

// Layout returns the layout of the store as this Store last read it: 1
// or 2 (see LayoutVersion, WithLayout and Migrate).
func (s *Store) Layout() int {
	if s.v2.Load() {
		return 2
	}
	return 1
}

// Key returns the key holding a task's record.
func (s *Store) Key(taskID string) string { return s.base + taskID }

// KeepsJSON reports true: records are JSON, so a result reads back as
// encoding/json decodes it into an any (apcore.JSONStore).
func (s *Store) KeepsJSON() bool { return true }

func invalid(msg string) error { return &apcore.Error{Code: apcore.CodeInvalidInput, Message: msg} }

func unavailable(op string, err error) error {
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "redisstore: " + op, Cause: err}
}

func notFound(id string) error {
	return &apcore.Error{Code: apcore.CodeTaskNotFound, Message: "Task not found: " + id}
}

// recordKeys are the KEYS of a script about one record: the record's key
// (see scripts.go).
func (s *Store) recordKeys(taskID string) []string {
	return []string{s.Key(taskID)}
}

func checkRecord(t *apcore.TaskInfo) error {
	switch {
	case t.TaskID == "":
		return invalid("redisstore: record has an empty task id")
	case strings.HasPrefix(t.TaskID, indexTag):
		return invalid(fmt.Sprintf("redisstore: task id %q starts with %q, which the store keeps for its indexes", t.TaskID, indexTag))
	case !t.Status.Valid():
		return invalid(fmt.Sprintf("redisstore: record %s has unknown status %q", t.TaskID, t.Status))
	case t.Priority < apcore.MinPriority || t.Priority > apcore.MaxPriority:
		return invalid(fmt.Sprintf("redisstore: record %s's priority %d is not within %d-%d", t.TaskID, t.Priority, apcore.MinPriority, apcore.MaxPriority))
	case len(t.UniqueKey) > maxUniqueKey:
		return invalid(fmt.Sprintf("redisstore: record %s's unique key is %d bytes, more than %d", t.TaskID, len(t.UniqueKey), maxUniqueKey))
	}
	return nil
}

// maxUniqueKey is the longest unique key a record may have, in bytes, as
// apcore.WithUniqueKey and the wire format allow.
const maxUniqueKey = 256

// encode is the record's JSON, or GENERAL_INVALID_INPUT when it does not
// encode or is larger than the store writes.
func (s *Store) encode(t *apcore.TaskInfo) ([]byte, error) {
	data, ok, err := appendRecord(make([]byte, 0, 256), t)
	if err == nil && !ok {
		data, err = json.Marshal(t)
	}
	if err != nil {
		_, err = json.Marshal(t) // json.Marshal's error, which says the type
		return nil, &apcore.Error{Code: apcore.CodeInvalidInput, Message: fmt.Sprintf("redisstore: task %s cannot be encoded as JSON", t.TaskID), Cause: err}
	}
	if len(data) > s.maxBytes {
		return nil, invalid(fmt.Sprintf("redisstore: task %s's record is %d bytes, more than the %d the store writes", t.TaskID, len(data), s.maxBytes))
	}
	return data, nil
}

// unkeepable turns a terminal record that cannot be written (its result
// does not encode, or it is too large) into the failed record written in
// its place: no result, no progress message, an error that says why. It
// returns false for an active record, which has no such substitute.
func unkeepable(t *apcore.TaskInfo, cause error) bool {
	if !t.Status.IsTerminal() {
		return false
	}
	msg := "the task's outcome cannot be kept: " + cause.Error()
	if ae := (*apcore.Error)(nil); errors.As(cause, &ae) && ae.Message != "" {
		msg = "the task's outcome cannot be kept: " + ae.Message
		if ae.Cause != nil {
			msg += ": " + ae.Cause.Error()
		}
	}
	t.Status, t.Result, t.Error, t.ErrorCode = apcore.StatusFailed, nil, msg, apcore.CodeInvalidInput
	t.ProgressMessage = ""
	if t.CompletedAt.IsZero() {
		t.CompletedAt = time.Now()
	}
	return true
}

// micros is t in Unix microseconds, "" for the zero time.
func micros(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMicro(), 10)
}

// doneScore is a record's score in its terminal state's index: its
// reference time, which Sweep compares with its bound: its completed_at,
// or its submitted_at without one (-inf for the zero time). Earlier
// versions scored a record without completed_at +inf; Sweep scores those
// anew (see sweepScript). ListExpired checks the completed_at of each
// record it finds by score, so the submitted_at of a record without one
// never makes it expired there; nor in an earlier version's ListExpired,
// which checks it too.
func doneScore(t *apcore.TaskInfo) string {
	switch {
	case !t.Status.IsTerminal():
		return "+inf"
	case !t.CompletedAt.IsZero():
		return micros(t.CompletedAt)
	case !t.SubmittedAt.IsZero():
		return micros(t.SubmittedAt)
	}
	return "-inf"
}

// wireSeconds is t as the wire format writes it (float Unix seconds).
func wireSeconds(t time.Time) string {
	b, _ := json.Marshal(float64(t.UnixMicro()) / 1e6)
	return string(b)
}

// write runs saveScript for task in mode "set" or "if". A terminal record
// that cannot be encoded is written as failed instead, and reported as not
// written, so that a manager reads back the stored outcome.
func (s *Store) write(ctx context.Context, task *apcore.TaskInfo, mode string, from []apcore.TaskStatus) (bool, error) {
	if err := checkRecord(task); err != nil {
		return false, err
	}
	data, err := s.encode(task)
	substituted := false
	if err != nil {
		if mode != "if" || !unkeepable(task, err) {
			return false, err
		}
		if data, err = s.encode(task); err != nil {
			return false, err
		}
		substituted = true
	}
	argv := []any{s.base, task.TaskID, data, string(task.Status), doneScore(task), mode}
	for _, st := range from {
		argv = append(argv, string(st))
	}
	n, err := s.run(ctx, saves, s.recordKeys(task.TaskID), argv...).Int()
	if err != nil {
		return false, unavailable("save "+task.TaskID, err)
	}
	return n == 1 && !substituted, nil
}

// Save creates or overwrites the record; an overwrite keeps its place in
// the insertion order, and its owner. A record that cannot be encoded (a
// result that is not JSON, or too large) is GENERAL_INVALID_INPUT.
func (s *Store) Save(ctx context.Context, task apcore.TaskInfo) error {
	_, err := s.write(ctx, &task, "set", nil)
	return err
}

// SaveIf overwrites the record only if its stored state is one of from,
// atomically; an absent record is not saved. A terminal record whose result
// cannot be encoded (or is larger than WithMaxRecordBytes) is written as
// failed with GENERAL_INVALID_INPUT instead, under the same condition, and
// SaveIf reports false, so the caller reads the stored outcome: the task
// never stays active because its result could not be kept.
func (s *Store) SaveIf(ctx context.Context, task apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	if err := checkRecord(&task); err != nil {
		return false, err
	}
	if len(from) == 0 {
		return false, nil
	}
	return s.write(ctx, &task, "if", from)
}

// Get returns the record, or an error matching apcore.ErrTaskNotFound.
func (s *Store) Get(ctx context.Context, taskID string) (apcore.TaskInfo, error) {
	if strings.HasPrefix(taskID, indexTag) {
		return apcore.TaskInfo{}, notFound(taskID)
	}
	data, err := s.rdb.Get(ctx, s.Key(taskID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return apcore.TaskInfo{}, notFound(taskID)
	}
	if err != nil {
		return apcore.TaskInfo{}, unavailable("get "+taskID, err)
	}
	var t apcore.TaskInfo
	if err := decodeRecord(data, &t); err != nil {
		return apcore.TaskInfo{}, unavailable("decode "+taskID, err)
	}
	return t, nil
}

// Delete removes the record and its index entries; an absent id is not an
// error.
func (s *Store) Delete(ctx context.Context, taskID string) error {
	_, err := s.Remove(ctx, taskID)
	return err
}

// Remove removes the record and its index entries and reports whether it
// was there (apcore.Remover).
func (s *Store) Remove(ctx context.Context, taskID string) (bool, error) {
	if strings.HasPrefix(taskID, indexTag) || taskID == "" {
		return false, nil
	}
	n, err := s.run(ctx, removes, s.recordKeys(taskID), s.base, taskID).Int()
	if err != nil {
		return false, unavailable("delete "+taskID, err)
	}
	return n == 1, nil
}

// Count returns how many records are in any of statuses (none = all), in one
// script. Count() and Count(pending, running) read one index's size; a
// count of pending or running alone reads the active records' states.
func (s *Store) Count(ctx context.Context, statuses ...apcore.TaskStatus) (int, error) {
	argv := []any{s.base}
	for _, st := range statuses {
		if !st.Valid() {
			return 0, invalid(fmt.Sprintf("redisstore: unknown status %q", st))
		}
		argv = append(argv, string(st))
	}
	n, err := s.run(ctx, counts, s.anyKey, argv...).Int()
	if err != nil {
		return 0, unavailable("count", err)
	}
	return n, nil
}

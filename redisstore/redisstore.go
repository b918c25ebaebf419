// Package redisstore is an apcore.TaskStore in Redis: task records that
// several managers (several replicas of a service) share, and that services
// written with the other apcore SDKs can read.
//
//	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store, err := redisstore.New(client)
//	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
//
// Any redis.UniversalClient works: a single node, sentinel (failover) or
// cluster client. Each record is a string key, prefix + task id (prefix
// "apcore:tasks:" by default), holding the protocol's JSON wire format.
// Beside the records the store keeps, under prefix + "_idx:", a sorted set
// in insertion order, one per state, an expiry set scored by completed_at,
// a sequence counter and a hash of each task's state. Every write changes
// the record and its indexes in one Lua script, which Redis runs
// atomically, so a crash between two commands cannot leave an index that
// disagrees with the records; SaveIf checks the stored state in the same
// script.
//
// With a cluster client the prefix becomes a hash tag ("{apcore:tasks}:"),
// so all of one store's keys live in one slot, as multi-key scripts
// require. Connection failures are errors matching
// apcore.ErrStoreUnavailable that wrap go-redis's error.
package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the key prefix New uses unless WithPrefix says otherwise.
const DefaultPrefix = "apcore:tasks:"

// Option configures New.
type Option func(*config)

type config struct {
	prefix  string
	hashTag *bool
}

// WithPrefix sets the key prefix (default "apcore:tasks:").
func WithPrefix(p string) Option { return func(c *config) { c.prefix = p } }

// WithHashTag forces (true) or prevents (false) wrapping the prefix in a
// cluster hash tag. By default it is on for a *redis.ClusterClient only.
func WithHashTag(on bool) Option { return func(c *config) { c.hashTag = &on } }

// Store is an apcore.TaskStore in Redis. It implements apcore.Counter and
// apcore.ConditionalSaver. It is safe for concurrent use.
type Store struct {
	rdb  redis.UniversalClient
	base string // what every key starts with

	order, seq, expiry, state string
	byStatus                  map[apcore.TaskStatus]string
	indexKeys                 []string // order, seq, expiry, state, then the five state sets
}

var (
	_ apcore.TaskStore        = (*Store)(nil)
	_ apcore.Counter          = (*Store)(nil)
	_ apcore.ConditionalSaver = (*Store)(nil)
)

var states = []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}

// indexTag marks the index keys; a task id may not start with it.
const indexTag = "_idx:"

// New returns a store using client. It does no I/O.
func New(client redis.UniversalClient, opts ...Option) (*Store, error) {
	if client == nil {
		return nil, invalid("redisstore.New: the client is nil")
	}
	cfg := config{prefix: DefaultPrefix}
	for _, o := range opts {
		if o == nil {
			return nil, invalid("redisstore.New: nil option")
		}
		o(&cfg)
	}
	if cfg.prefix == "" || strings.ContainsAny(cfg.prefix, "{}") {
		return nil, invalid(fmt.Sprintf("redisstore: prefix %q: it must be non-empty and hold no braces", cfg.prefix))
	}
	_, cluster := client.(*redis.ClusterClient)
	tag := cluster
	if cfg.hashTag != nil {
		tag = *cfg.hashTag
	}
	base := cfg.prefix
	if tag {
		base = "{" + strings.TrimSuffix(cfg.prefix, ":") + "}:"
	}
	s := &Store{rdb: client, base: base, byStatus: map[apcore.TaskStatus]string{}}
	s.order, s.seq, s.expiry, s.state = base+indexTag+"order", base+indexTag+"seq", base+indexTag+"expiry", base+indexTag+"state"
	s.indexKeys = []string{s.order, s.seq, s.expiry, s.state}
	for _, st := range states {
		s.byStatus[st] = base + indexTag + "status:" + string(st)
		s.indexKeys = append(s.indexKeys, s.byStatus[st])
	}
	return s, nil
}

// Name returns "RedisTaskStore".
func (s *Store) Name() string { return "RedisTaskStore" }

// Key returns the key holding a task's record.
func (s *Store) Key(taskID string) string { return s.base + taskID }

func invalid(msg string) error { return &apcore.Error{Code: apcore.CodeInvalidInput, Message: msg} }

func unavailable(op string, err error) error {
	return &apcore.Error{Code: apcore.CodeTaskStoreUnavailable, Message: "redisstore: " + op, Cause: err}
}

func notFound(id string) error {
	return &apcore.Error{Code: apcore.CodeTaskNotFound, Message: "Task not found: " + id}
}

// keys are the script's KEYS: the record, then the index keys.
func (s *Store) keys(taskID string) []string {
	return append([]string{s.Key(taskID)}, s.indexKeys...)
}

// saveScript writes a record and its indexes. KEYS: record, order, seq,
// expiry, state, then the sets of pending, running, completed, failed,
// cancelled. ARGV: id, json, status, completed_at in µs or "", mode ("set"
// or "if"), then for "if" the states the stored record must be in.
var saveScript = redis.NewScript(`
local sets = {pending = 6, running = 7, completed = 8, failed = 9, cancelled = 10}
local id, status = ARGV[1], ARGV[3]
local old = redis.call('HGET', KEYS[5], id)
if ARGV[5] == 'if' then
  if not old then return 0 end
  local ok = false
  for i = 6, #ARGV do
    if ARGV[i] == old then ok = true end
  end
  if not ok then return 0 end
end
local seq
if old then
  seq = redis.call('ZSCORE', KEYS[2], id)
  redis.call('ZREM', KEYS[sets[old]], id)
else
  seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], seq, id)
end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[5], id, status)
redis.call('ZADD', KEYS[sets[status]], seq, id)
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[4], id)
else
  redis.call('ZREM', KEYS[4], id)
end
return 1
`)

// deleteScript removes a record and its index entries. KEYS as saveScript;
// ARGV: id.
var deleteScript = redis.NewScript(`
local sets = {pending = 6, running = 7, completed = 8, failed = 9, cancelled = 10}
local id = ARGV[1]
local old = redis.call('HGET', KEYS[5], id)
redis.call('DEL', KEYS[1])
if not old then return 0 end
redis.call('HDEL', KEYS[5], id)
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[sets[old]], id)
redis.call('ZREM', KEYS[4], id)
return 1
`)

func checkRecord(t *apcore.TaskInfo) error {
	switch {
	case t.TaskID == "":
		return invalid("redisstore: record has an empty task id")
	case strings.HasPrefix(t.TaskID, indexTag):
		return invalid(fmt.Sprintf("redisstore: task id %q starts with %q, which the store keeps for its indexes", t.TaskID, indexTag))
	case !t.Status.IsActive() && !t.Status.IsTerminal():
		return invalid(fmt.Sprintf("redisstore: record %s has unknown status %q", t.TaskID, t.Status))
	}
	return nil
}

// write runs saveScript for task in mode "set" or "if".
func (s *Store) write(ctx context.Context, task *apcore.TaskInfo, mode string, from []apcore.TaskStatus) (bool, error) {
	if err := checkRecord(task); err != nil {
		return false, err
	}
	data, err := json.Marshal(task)
	if err != nil {
		return false, invalid(fmt.Sprintf("redisstore: task %s cannot be encoded: %v", task.TaskID, err))
	}
	completed := ""
	if task.Status.IsTerminal() && !task.CompletedAt.IsZero() {
		completed = strconv.FormatInt(task.CompletedAt.UnixMicro(), 10)
	}
	argv := []any{task.TaskID, data, string(task.Status), completed, mode}
	for _, st := range from {
		argv = append(argv, string(st))
	}
	n, err := saveScript.Run(ctx, s.rdb, s.keys(task.TaskID), argv...).Int()
	if err != nil {
		return false, unavailable("save "+task.TaskID, err)
	}
	return n == 1, nil
}

// Save creates or overwrites the record; an overwrite keeps its place in
// the insertion order.
func (s *Store) Save(ctx context.Context, task apcore.TaskInfo) error {
	_, err := s.write(ctx, &task, "set", nil)
	return err
}

// SaveIf overwrites the record only if its stored state is one of from,
// atomically; an absent record is not saved.
func (s *Store) SaveIf(ctx context.Context, task apcore.TaskInfo, from ...apcore.TaskStatus) (bool, error) {
	if len(from) == 0 {
		if err := checkRecord(&task); err != nil {
			return false, err
		}
		return false, nil
	}
	return s.write(ctx, &task, "if", from)
}

// Get returns the record, or an error matching apcore.ErrTaskNotFound.
func (s *Store) Get(ctx context.Context, taskID string) (apcore.TaskInfo, error) {
	data, err := s.rdb.Get(ctx, s.Key(taskID)).Bytes()
	if errors.Is(err, redis.Nil) || strings.HasPrefix(taskID, indexTag) {
		return apcore.TaskInfo{}, notFound(taskID)
	}
	if err != nil {
		return apcore.TaskInfo{}, unavailable("get "+taskID, err)
	}
	var t apcore.TaskInfo
	if err := json.Unmarshal(data, &t); err != nil {
		return apcore.TaskInfo{}, unavailable("decode "+taskID, err)
	}
	return t, nil
}

// List returns every record ("" status) or those in one state, in insertion
// order. It reads the index, then the records in batches; a record that
// changes state or is deleted in between is left out.
func (s *Store) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	index := s.order
	if status != "" {
		var ok bool
		if index, ok = s.byStatus[status]; !ok {
			return nil, invalid(fmt.Sprintf("redisstore: unknown status %q", status))
		}
	}
	ids, err := s.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, unavailable("list", err)
	}
	return s.fetch(ctx, ids, func(t *apcore.TaskInfo) bool { return status == "" || t.Status == status })
}

// ListExpired returns the terminal records whose CompletedAt is set and
// strictly before before, oldest first.
func (s *Store) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.expiry, &redis.ZRangeBy{
		Min: "-inf", Max: "(" + strconv.FormatInt(before.UnixMicro(), 10),
	}).Result()
	if err != nil {
		return nil, unavailable("list expired", err)
	}
	return s.fetch(ctx, ids, func(t *apcore.TaskInfo) bool {
		return t.Status.IsTerminal() && !t.CompletedAt.IsZero() && t.CompletedAt.Before(before)
	})
}

// fetch reads the records of ids, in order, keeping those keep accepts.
func (s *Store) fetch(ctx context.Context, ids []string, keep func(*apcore.TaskInfo) bool) ([]apcore.TaskInfo, error) {
	out := make([]apcore.TaskInfo, 0, len(ids))
	const batch = 500
	for start := 0; start < len(ids); start += batch {
		chunk := ids[start:min(start+batch, len(ids))]
		keys := make([]string, len(chunk))
		for i, id := range chunk {
			keys[i] = s.Key(id)
		}
		vals, err := s.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, unavailable("read records", err)
		}
		for i, v := range vals {
			str, ok := v.(string)
			if !ok {
				continue // deleted since the index was read
			}
			var t apcore.TaskInfo
			if err := json.Unmarshal([]byte(str), &t); err != nil {
				return nil, unavailable("decode "+chunk[i], err)
			}
			if keep(&t) {
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// Delete removes the record and its index entries; an absent id is not an
// error.
func (s *Store) Delete(ctx context.Context, taskID string) error {
	if strings.HasPrefix(taskID, indexTag) {
		return nil
	}
	if err := deleteScript.Run(ctx, s.rdb, s.keys(taskID), taskID).Err(); err != nil {
		return unavailable("delete "+taskID, err)
	}
	return nil
}

// Count returns how many records are in any of statuses (none = all), from
// the indexes' sizes, read in one MULTI/EXEC.
func (s *Store) Count(ctx context.Context, statuses ...apcore.TaskStatus) (int, error) {
	keys := []string{s.order}
	if len(statuses) > 0 {
		keys = keys[:0]
		for i, st := range statuses {
			k, ok := s.byStatus[st]
			if !ok {
				return 0, invalid(fmt.Sprintf("redisstore: unknown status %q", st))
			}
			dup := false
			for _, prev := range statuses[:i] {
				dup = dup || prev == st
			}
			if !dup {
				keys = append(keys, k)
			}
		}
	}
	cmds, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.ZCard(ctx, k)
		}
		return nil
	})
	if err != nil {
		return 0, unavailable("count", err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.(*redis.IntCmd).Val())
	}
	return n, nil
}

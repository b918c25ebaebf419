package apcore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// startedAt is a module that records when it started, by the task's "name".
type startLog struct {
	mu    sync.Mutex
	at    map[string]time.Time
	order []string
}

func newStartLog() *startLog { return &startLog{at: make(map[string]time.Time)} }

func (l *startLog) module() Module {
	return ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		name, _ := in["name"].(string)
		l.mu.Lock()
		l.at[name] = time.Now()
		l.order = append(l.order, name)
		l.mu.Unlock()
		return name, nil
	})
}

func (l *startLog) started() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.order...)
}

// A task submitted WithDelay is pending with its RunAt, holds no slot,
// and starts at its time, not before; resumable or not.
func TestRunAtStartsAtItsTime(t *testing.T) {
	for _, resumable := range []bool{false, true} {
		t.Run(fmt.Sprintf("resumable=%v", resumable), func(t *testing.T) {
			ctx := testCtx(t)
			log := newStartLog()
			g := newGate(true)
			m := newManager(t, registry(t, map[string]Module{"a.later": log.module(), "a.gate": g}), WithMaxConcurrent(1))
			opts := []SubmitOption{WithDelay(300 * time.Millisecond)}
			if resumable {
				opts = append(opts, WithResumable())
			}
			before := time.Now()
			id, err := m.Submit(ctx, "a.later", map[string]any{"name": "later"}, opts...)
			require.NoError(t, err)
			info, err := m.Status(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, StatusPending, info.Status)
			require.NotNil(t, info.RunAt, "RunAt is on the record")
			assert.WithinDuration(t, before.Add(300*time.Millisecond), *info.RunAt, 100*time.Millisecond)

			// It holds no slot: a task submitted after it runs now, on the one slot.
			gid, err := m.Submit(ctx, "a.gate", nil)
			require.NoError(t, err)
			g.waitStart(t)
			g.open()
			_, err = m.Wait(ctx, gid)
			require.NoError(t, err)

			done, err := m.Wait(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, StatusCompleted, done.Status)
			require.NotNil(t, done.RunAt)
			log.mu.Lock()
			started := log.at["later"]
			log.mu.Unlock()
			assert.False(t, started.Before(*info.RunAt), "started %v, before its RunAt %v", started, *info.RunAt)
		})
	}
}

// A scheduled task is cancelled before its time like any pending task:
// its module never runs, and Shutdown does not wait for its time.
func TestRunAtCancelBeforeItsTime(t *testing.T) {
	ctx := testCtx(t)
	log := newStartLog()
	m := newManager(t, registry(t, map[string]Module{"a.later": log.module()}))
	id, err := m.Submit(ctx, "a.later", map[string]any{"name": "x"}, WithRunAt(time.Now().Add(time.Hour)))
	require.NoError(t, err)
	_, err = m.Cancel(ctx, id)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	other, err := m.Submit(ctx, "a.later", map[string]any{"name": "y"}, WithRunAt(time.Now().Add(time.Hour)), WithResumable())
	require.NoError(t, err)
	_, err = m.Cancel(ctx, other)
	require.NoError(t, err)
	info, err = m.Wait(ctx, other)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
	assert.Empty(t, log.started())
}

// A scheduled task still waiting at Shutdown is cancelled by it, at once.
func TestRunAtShutdownCancels(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m, err := NewTaskManager(registry(t, map[string]Module{"a.x": constModule(1)}), WithStore(store))
	require.NoError(t, err)
	id, err := m.Submit(ctx, "a.x", nil, WithDelay(time.Hour))
	require.NoError(t, err)
	start := time.Now()
	require.NoError(t, m.Shutdown(ctx))
	assert.Less(t, time.Since(start), 5*time.Second)
	info, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
}

// Submit WithUniqueKey returns the existing task's id with ErrDuplicateTask
// while it is pending, running or completed; a failed task lets the key go.
func TestUniqueKey(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"a.gate": g, "a.fail": failModule("no", nil)}))
	id, err := m.Submit(ctx, "a.gate", nil, WithUniqueKey("order-1"))
	require.NoError(t, err)
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, "order-1", info.UniqueKey)
	g.waitStart(t)
	again, err := m.Submit(ctx, "a.gate", nil, WithUniqueKey("order-1"))
	require.ErrorIs(t, err, ErrDuplicateTask)
	assert.Equal(t, CodeTaskDuplicate, CodeOf(err))
	assert.Equal(t, id, again, "the duplicate's id is the existing task's")
	var dup *DuplicateError
	require.ErrorAs(t, err, &dup)
	assert.Equal(t, "order-1", dup.Key)
	g.open()
	_, err = m.Wait(ctx, id)
	require.NoError(t, err)
	again, err = m.Submit(ctx, "a.gate", nil, WithUniqueKey("order-1"), WithResumable())
	require.ErrorIs(t, err, ErrDuplicateTask, "a completed task holds its key")
	assert.Equal(t, id, again)

	failed, err := m.Submit(ctx, "a.fail", nil, WithUniqueKey("order-2"))
	require.NoError(t, err)
	info, err = m.Wait(ctx, failed)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, info.Status)
	next, err := m.Submit(ctx, "a.gate", nil, WithUniqueKey("order-2"))
	require.NoError(t, err, "a failed task lets its key go")
	assert.NotEqual(t, failed, next)
}

// Submits of one key racing on managers that share a store make one task.
func TestUniqueKeyRaceAcrossManagers(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	var mgrs []*TaskManager
	for range 3 {
		mgrs = append(mgrs, newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}), WithStore(store)))
	}
	var wg sync.WaitGroup
	ids := make([]string, 24)
	errs := make([]error, 24)
	for i := range ids {
		wg.Go(func() {
			var opts []SubmitOption
			if i%2 == 0 {
				opts = append(opts, WithResumable())
			}
			ids[i], errs[i] = mgrs[i%3].Submit(ctx, "a.x", map[string]any{}, append(opts, WithUniqueKey("k"))...)
		})
	}
	wg.Wait()
	made := 0
	for i := range ids {
		if errs[i] == nil {
			made++
		} else {
			require.ErrorIs(t, errs[i], ErrDuplicateTask)
		}
		assert.Equal(t, ids[0], ids[i], "every Submit names the one task")
	}
	assert.Equal(t, 1, made)
	n, err := store.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// Tasks waiting for this manager's slot run higher priorities first, and
// equal priorities in submit order; so do resumable tasks claimed from the
// store.
func TestPriorityOrdersTheQueue(t *testing.T) {
	for _, resumable := range []bool{false, true} {
		t.Run(fmt.Sprintf("resumable=%v", resumable), func(t *testing.T) {
			ctx := testCtx(t)
			log := newStartLog()
			g := newGate(true)
			m := newManager(t, registry(t, map[string]Module{"a.log": log.module(), "a.gate": g}), WithMaxConcurrent(1))
			gid, err := m.Submit(ctx, "a.gate", nil)
			require.NoError(t, err)
			g.waitStart(t)
			prios := []int{0, 5, -3, 5, 0, 10, -100, 100}
			var ids []string
			for i, p := range prios {
				opts := []SubmitOption{WithPriority(p)}
				if resumable {
					opts = append(opts, WithResumable())
				}
				id, err := m.Submit(ctx, "a.log", map[string]any{"name": fmt.Sprint(i)}, opts...)
				require.NoError(t, err)
				ids = append(ids, id)
			}
			info, err := m.Status(ctx, ids[5])
			require.NoError(t, err)
			assert.Equal(t, 10, info.Priority)
			g.open()
			_, err = m.Wait(ctx, gid)
			require.NoError(t, err)
			for _, id := range ids {
				_, err := m.Wait(ctx, id)
				require.NoError(t, err)
			}
			assert.Equal(t, []string{"7", "5", "1", "3", "0", "4", "2", "6"}, log.started())
		})
	}
}

// Bad values of the new options are GENERAL_INVALID_INPUT naming the
// option, and save nothing.
func TestLaterOptionsRefused(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}), WithStore(store))
	for _, c := range []struct {
		opt  SubmitOption
		name string
	}{
		{WithPriority(101), "WithPriority"},
		{WithPriority(-101), "WithPriority"},
		{WithDelay(-time.Second), "WithDelay"},
		{WithUniqueKey(""), "WithUniqueKey"},
		{WithUniqueKey(strings.Repeat("k", 257)), "WithUniqueKey"},
		{WithUniqueKey("bad \xff"), "WithUniqueKey"},
		{WithRunAt(time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), "WithRunAt"},
		{WithTx(nil), "WithTx"},
	} {
		_, err := m.Submit(ctx, "a.x", nil, c.opt)
		require.ErrorIs(t, err, ErrInvalidInput, c.name)
		assert.Contains(t, err.Error(), c.name)
	}
	_, err := m.Submit(ctx, "a.x", nil, WithUniqueKey(strings.Repeat("é", 128)))
	require.NoError(t, err, "256 bytes of UTF-8 is a key")
	n, err := store.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
}

// WithUniqueKey and WithTx need a store that can keep them.
func TestLaterOptionsNeedTheirStore(t *testing.T) {
	ctx := testCtx(t)
	plain := plainStore{NewMemoryStore()}
	m := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}), WithStore(plain))
	_, err := m.Submit(ctx, "a.x", nil, WithUniqueKey("k"))
	require.ErrorIs(t, err, ErrInvalidInput)
	mem := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}))
	_, err = mem.Submit(ctx, "a.x", nil, WithTx(new(sql.Tx)))
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.Contains(t, err.Error(), "WithTx")
	all, err := plain.List(ctx, "")
	require.NoError(t, err)
	assert.Empty(t, all)
}

// The new fields are on the wire only when set, and read back.
func TestLaterFieldsOnTheWire(t *testing.T) {
	at := time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)
	info := TaskInfo{TaskID: "t", ModuleID: "m", Status: StatusPending, SubmittedAt: at}
	raw, err := json.Marshal(info)
	require.NoError(t, err)
	for _, f := range []string{"run_at", "unique_key", "priority"} {
		assert.NotContains(t, string(raw), f)
	}
	info.RunAt, info.UniqueKey, info.Priority = &at, "k", -7
	raw, err = json.Marshal(info)
	require.NoError(t, err)
	assert.Contains(t, string(raw), `"run_at":1796292000.123456,"unique_key":"k","priority":-7`)
	var back TaskInfo
	require.NoError(t, json.Unmarshal(raw, &back))
	require.NotNil(t, back.RunAt)
	assert.True(t, back.RunAt.Equal(at))
	assert.Equal(t, "k", back.UniqueKey)
	assert.Equal(t, -7, back.Priority)
	err = json.Unmarshal([]byte(`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"priority":500}`), &back)
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.True(t, errors.Is(err, ErrInvalidInput))
}

// A resumable task due later survives the Shutdown of every manager: it
// waits in the store (not an orphan to cancel), and a manager started
// afterwards runs it at its time.
func TestRunAtSurvivesEveryManagersShutdown(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	log := newStartLog()
	reg := registry(t, map[string]Module{"a.later": log.module()})
	first, err := NewTaskManager(reg, WithStore(store))
	require.NoError(t, err)
	id, err := first.Submit(ctx, "a.later", map[string]any{"name": "x"}, WithResumable(), WithDelay(500*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, first.Shutdown(ctx))
	info, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusPending, info.Status, "the last manager's Shutdown left it waiting")
	second := newManager(t, reg, WithStore(store))
	done, err := second.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, done.Status)
	assert.False(t, done.StartedAt.Before(*done.RunAt))
	assert.Equal(t, []string{"x"}, log.started())
}

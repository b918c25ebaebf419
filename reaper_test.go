package apcore

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func seed(t *testing.T, s TaskStore, infos ...TaskInfo) {
	t.Helper()
	for _, info := range infos {
		require.NoError(t, s.Save(context.Background(), info))
	}
}

func TestCleanup(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store), WithMaxConcurrent(0))
	old, recent := now().Add(-2*time.Hour), now().Add(-time.Minute)
	seed(t, store,
		TaskInfo{TaskID: "old-done", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
		TaskInfo{TaskID: "old-failed-no-completed-at", ModuleID: "a.b", Status: StatusFailed, SubmittedAt: old},
		TaskInfo{TaskID: "recent-done", ModuleID: "a.b", Status: StatusCancelled, SubmittedAt: old, CompletedAt: recent},
		TaskInfo{TaskID: "old-running", ModuleID: "a.b", Status: StatusRunning, SubmittedAt: old, StartedAt: old},
		TaskInfo{TaskID: "old-pending", ModuleID: "a.b", Status: StatusPending, SubmittedAt: old},
	)
	n, err := m.Cleanup(ctx, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	left, err := m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"recent-done", "old-running", "old-pending"}, taskIDs(left))

	n, err = m.Cleanup(ctx, -1)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err = m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"old-running", "old-pending"}, taskIDs(left))
	count, err := m.TaskCount(ctx)
	require.NoError(t, err)
	assert.Equal(t, 2, count)
}

func TestReapDeletesOnlyExpiredTerminalRecords(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store))
	cut := now()
	seed(t, store,
		TaskInfo{TaskID: "before", ModuleID: "a.b", Status: StatusFailed, SubmittedAt: cut, CompletedAt: cut.Add(-time.Microsecond), Error: "x"},
		TaskInfo{TaskID: "at-cutoff", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: cut, CompletedAt: cut},
		TaskInfo{TaskID: "active", ModuleID: "a.b", Status: StatusRunning, SubmittedAt: cut.Add(-time.Hour)},
	)
	n, err := m.Reap(ctx, cut)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	left, err := m.List(ctx, "")
	require.NoError(t, err)
	assert.Equal(t, []string{"at-cutoff", "active"}, taskIDs(left))
}

// ---- 10. reaper -----------------------------------------------------------------

func TestReaperSweepsAndLogs(t *testing.T) {
	store := newHookStore()
	logs := newLogCapture()
	m := newManager(t, registry(t, map[string]Module{"a.b": constModule(1)}), WithStore(store), WithLogger(logs.logger()))
	old := now().Add(-time.Hour)
	seed(t, store,
		TaskInfo{TaskID: "expired", ModuleID: "a.b", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
		TaskInfo{TaskID: "active", ModuleID: "a.b", Status: StatusPending, SubmittedAt: old},
	)
	h, err := m.StartReaper(ReaperConfig{TTL: time.Minute, SweepInterval: time.Millisecond})
	require.NoError(t, err)
	_, err = m.StartReaper(ReaperConfig{})
	require.ErrorIs(t, err, ErrReaperAlreadyRunning)

	rec := logs.waitMessage(t, slog.LevelDebug, "apcore: reaper deleted expired tasks")
	assert.Equal(t, "1", attr(rec, "count"))
	_, err = store.Get(context.Background(), "expired")
	require.ErrorIs(t, err, ErrTaskNotFound)
	_, err = store.Get(context.Background(), "active")
	require.NoError(t, err, "the reaper never deletes an active task")

	store.mu.Lock()
	store.expiredErr = errors.New("connection refused")
	store.mu.Unlock()
	rec = logs.waitMessage(t, slog.LevelWarn, "apcore: reaper sweep failed; will retry at the next sweep")
	assert.Contains(t, attr(rec, "error"), "connection refused")

	require.NoError(t, h.Stop(context.Background()))
	require.NoError(t, h.Stop(context.Background()), "Stop is idempotent")
	select {
	case <-h.done:
	default:
		t.Fatal("Stop returned before the sweeper ended")
	}
	h2, err := m.StartReaper(ReaperConfig{SweepInterval: time.Hour})
	require.NoError(t, err, "a stopped reaper may be replaced")
	require.NoError(t, m.Shutdown(context.Background()))
	select {
	case <-h2.done:
	default:
		t.Fatal("Shutdown must stop the reaper")
	}
	_, err = m.StartReaper(ReaperConfig{})
	require.ErrorIs(t, err, ErrManagerClosed)
}

func TestReaperRejectsNegativeConfig(t *testing.T) {
	m := newManager(t, registry(t, nil))
	_, err := m.StartReaper(ReaperConfig{TTL: -1})
	require.ErrorIs(t, err, ErrInvalidInput)
	_, err = m.StartReaper(ReaperConfig{SweepInterval: -1})
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.Equal(t, ReaperConfig{TTL: time.Hour, SweepInterval: 5 * time.Minute}, DefaultReaperConfig())
}

// ---- 11. shutdown ---------------------------------------------------------------

// Records a crashed process left active are failed by FailStale, which
// frees their places; this manager's own tasks and fresh ones are left alone.
func TestFailStale(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	g := newGate(true)
	m := newManager(t, registry(t, map[string]Module{"slow.job": g}), WithStore(store), WithMaxTasks(3))
	old := now().Add(-2 * time.Hour)
	seed(t, store,
		TaskInfo{TaskID: "crashed-running", ModuleID: "slow.job", Status: StatusRunning, SubmittedAt: old, StartedAt: old},
		TaskInfo{TaskID: "crashed-pending", ModuleID: "slow.job", Status: StatusPending, SubmittedAt: old},
		TaskInfo{TaskID: "done-long-ago", ModuleID: "slow.job", Status: StatusCompleted, SubmittedAt: old, CompletedAt: old},
	)
	mine, err := m.Submit(ctx, "slow.job", nil)
	require.NoError(t, err)
	g.waitStart(t)
	_, err = m.Submit(ctx, "slow.job", nil)
	require.ErrorIs(t, err, ErrTaskLimitExceeded, "the stale records hold two of the three places")

	n, err := m.FailStale(ctx, time.Hour)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	for _, id := range []string{"crashed-running", "crashed-pending"} {
		info, err := m.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusFailed, info.Status, id)
		assert.Contains(t, info.Error, "abandoned")
		assert.False(t, info.CompletedAt.IsZero())
	}
	info, err := m.Status(ctx, "done-long-ago")
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "terminal records are left alone")
	info, err = m.Status(ctx, mine)
	require.NoError(t, err)
	assert.Equal(t, StatusRunning, info.Status, "this manager's own task is left alone, however old")

	fresh, err := m.Submit(ctx, "slow.job", nil) // a place is free again
	require.NoError(t, err)
	n, err = m.FailStale(ctx, 0)
	require.NoError(t, err)
	assert.Zero(t, n, "only records no manager here runs are failed")
	_, err = m.FailStale(ctx, -1)
	require.ErrorIs(t, err, ErrInvalidInput)
	g.open()
	for _, id := range []string{mine, fresh} {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusCompleted, info.Status)
	}
}

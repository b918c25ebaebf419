package apcore

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Progress is seen at once on the owning manager, reaches the store within
// a second however often the module reports, and stays on the final record.
func TestReportProgress(t *testing.T) {
	ctx := testCtx(t)
	step := make(chan float64)
	reported := make(chan error)
	mod := ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		for p := range step {
			reported <- ReportProgress(ctx, p, "step")
		}
		return "done", nil
	})
	store := &countingStore{MemoryStore: NewMemoryStore()}
	obs := newObserved()
	m := newManager(t, registry(t, map[string]Module{"work": mod}), WithStore(store), WithObserver(obs.observe))
	id, err := m.Submit(ctx, "work", nil)
	require.NoError(t, err)

	step <- 10
	require.NoError(t, <-reported)
	seen := obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.Progress == 10 })
	assert.Equal(t, StatusRunning, seen.Status)
	assert.Equal(t, "step", seen.ProgressMessage)

	// A burst of reports costs a few writes, and the last one lands.
	writesBefore := store.saveIfs.Load()
	for p := 11.0; p <= 60; p++ {
		step <- p
		require.NoError(t, <-reported)
	}
	require.Eventually(t, func() bool {
		info, err := store.Get(ctx, id)
		return err == nil && info.Progress == 60
	}, time.Second, 5*time.Millisecond, "the latest progress reaches the store within a second")
	assert.LessOrEqual(t, store.saveIfs.Load()-writesBefore, int64(3), "a burst of 50 reports is coalesced")

	close(step)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
	assert.Equal(t, 60.0, info.Progress, "the final record keeps the last progress")
	stored, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 60.0, stored.Progress)
	assert.Equal(t, "step", stored.ProgressMessage)
}

func TestReportProgressRejects(t *testing.T) {
	ctx := testCtx(t)
	errs := make(chan []error, 1)
	mod := ModuleFunc(func(taskCtx context.Context, _ map[string]any) (any, error) {
		errs <- []error{
			ReportProgress(taskCtx, -1, ""),
			ReportProgress(taskCtx, 100.5, ""),
			ReportProgress(taskCtx, math.NaN(), ""),
			ReportProgress(taskCtx, 5, strings.Repeat("x", maxProgressMessage+1)),
			ReportProgress(context.Background(), 5, ""),
			ReportProgress(nilContext(), 5, ""),
		}
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"work": mod}))
	id, err := m.Submit(ctx, "work", nil)
	require.NoError(t, err)
	for i, err := range <-errs {
		assert.ErrorIs(t, err, ErrInvalidInput, "case %d", i)
	}
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Zero(t, info.Progress, "refused reports change nothing")
}

// A progress write that finds the task cancelled by another manager stops
// the module: remote cancel through the progress path.
func TestProgressWriteSeesRemoteCancel(t *testing.T) {
	ctx := testCtx(t)
	stopped := make(chan error, 1)
	mod := ModuleFunc(func(taskCtx context.Context, _ map[string]any) (any, error) {
		for {
			if err := ReportProgress(taskCtx, 1, ""); err != nil {
				return nil, err
			}
			select {
			case <-taskCtx.Done():
				stopped <- taskCtx.Err()
				return nil, taskCtx.Err()
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	store := NewMemoryStore()
	reg := registry(t, map[string]Module{"work": mod})
	a := newManager(t, reg, WithStore(store))
	b := newManager(t, reg, WithStore(store))
	id, err := a.Submit(ctx, "work", nil)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		info, err := store.Get(ctx, id)
		return err == nil && info.Progress == 1
	}, 5*time.Second, 5*time.Millisecond)
	ok, err := b.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.Canceled)
	case <-ctx.Done():
		t.Fatal("the module on the owning manager never saw the cancel")
	}
	info, err := a.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCancelled, info.Status)
}

func TestTaskFromContext(t *testing.T) {
	ctx := testCtx(t)
	got := make(chan TaskInfo, 1)
	mod := ModuleFunc(func(taskCtx context.Context, _ map[string]any) (any, error) {
		derived, cancel := context.WithCancel(taskCtx)
		defer cancel()
		info, ok := TaskFromContext(derived)
		if !ok {
			return nil, Permanent(invalidf("no task in the context"))
		}
		got <- info
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"work": mod}))
	id, err := m.Submit(ctx, "work", nil)
	require.NoError(t, err)
	info := <-got
	assert.Equal(t, id, info.TaskID)
	assert.Equal(t, StatusRunning, info.Status)
	_, ok := TaskFromContext(ctx)
	assert.False(t, ok)
	_, ok = TaskFromContext(nilContext())
	assert.False(t, ok)
}

// Status and List on the owning manager show a progress report at once,
// before the coalesced store write.
func TestProgressIsFreshOnTheOwner(t *testing.T) {
	ctx := testCtx(t)
	reported := make(chan struct{})
	mod := ModuleFunc(func(taskCtx context.Context, _ map[string]any) (any, error) {
		if err := ReportProgress(taskCtx, 50, "half"); err != nil {
			return nil, err
		}
		close(reported)
		<-taskCtx.Done()
		return nil, taskCtx.Err()
	})
	m := newManager(t, registry(t, map[string]Module{"work": mod}))
	id, err := m.Submit(ctx, "work", nil)
	require.NoError(t, err)
	<-reported
	info, err := m.Status(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 50.0, info.Progress)
	assert.Equal(t, "half", info.ProgressMessage)
	list, err := m.List(ctx, StatusRunning)
	require.NoError(t, err)
	require.Len(t, list, 1)
	assert.Equal(t, 50.0, list[0].Progress)
	_, err = m.Cancel(ctx, id)
	require.NoError(t, err)
}

// A cancel of another manager's task is a transition this manager makes:
// its observers see it.
func TestObserversSeeACancelOfAnotherManagersTask(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	mod := newBlocker()
	reg := registry(t, map[string]Module{"block": mod})
	runner := newManager(t, reg, WithStore(store))
	obs := newObserved()
	canceller := newManager(t, reg, WithStore(store), WithObserver(obs.observe))
	id, err := runner.Submit(ctx, "block", nil)
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the start")
	ok, err := canceller.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	seen := obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id })
	assert.Equal(t, StatusCancelled, seen.Status)
}

// nilContext is a nil context, for the tests of what a nil context does.
func nilContext() context.Context { return nil }

package apcore

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// outageStore is a shared MemoryStore whose writes fail while down is set,
// as one replica's connection to a database in an outage would.
type outageStore struct {
	*MemoryStore
	down atomic.Bool
}

var errOutage = errors.New("store outage")

func (o *outageStore) Update(ctx context.Context, task StoredTask, holder string) (bool, error) {
	if o.down.Load() {
		return false, errOutage
	}
	return o.MemoryStore.Update(ctx, task, holder)
}

func (o *outageStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	if o.down.Load() {
		return TaskInfo{}, errOutage
	}
	return o.MemoryStore.Get(ctx, id)
}

// After an outage, kept outcomes reach the store in the background, with no
// call to the owner: other replicas see them within moments.
func TestKeptOutcomesAreWrittenBackInTheBackground(t *testing.T) {
	ctx := testCtx(t)
	shared := NewMemoryStore()
	flaky := &outageStore{MemoryStore: shared}
	mod := newBlocker()
	owner := newManager(t, registry(t, map[string]Module{"block": mod}), WithStore(flaky))
	other := newManager(t, registry(t, map[string]Module{"block": mod}), WithStore(shared))
	var ids []string
	for range 8 {
		id, err := owner.Submit(ctx, "block", nil)
		require.NoError(t, err)
		ids = append(ids, id)
		recv(t, mod.started, 5*time.Second, "a start")
	}
	flaky.down.Store(true)
	close(mod.release)
	require.Eventually(t, func() bool { return owner.nKept.Load() == 8 }, 5*time.Second, 5*time.Millisecond,
		"the owner keeps the 8 outcomes the store refused")
	for _, id := range ids {
		info, err := other.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusRunning, info.Status, "during the outage the store still says running")
	}
	flaky.down.Store(false)
	back := time.Now()
	for _, id := range ids {
		require.Eventually(t, func() bool {
			info, err := other.Status(ctx, id)
			return err == nil && info.Status == StatusCompleted
		}, 10*time.Second, 5*time.Millisecond, "the outcome reaches the store without a call to the owner")
	}
	t.Logf("all 8 outcomes in the store %v after it came back", time.Since(back))
	assert.Zero(t, owner.nKept.Load())
}

// A store that lost a record (a Redis that restarted empty) never turns a
// known outcome into another: the owner writes back what it knows, both
// while the task runs and when it ends.
func TestOwnerWritesBackALostRecord(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	mod := newBlocker()
	m := newManager(t, registry(t, map[string]Module{"block": mod}), WithStore(store))
	id, err := m.Submit(ctx, "block", nil)
	require.NoError(t, err)
	recv(t, mod.started, 5*time.Second, "the start")
	require.NoError(t, store.Delete(ctx, id)) // the store loses it
	require.Eventually(t, func() bool {
		info, err := store.Get(ctx, id)
		return err == nil && info.Status == StatusRunning
	}, 5*time.Second, 5*time.Millisecond, "the owner writes the running record back")

	require.NoError(t, store.Delete(ctx, id)) // and loses it again
	close(mod.release)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "the known outcome stands")
	stored, err := store.Get(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, stored.Status, "and the store has it back")
}

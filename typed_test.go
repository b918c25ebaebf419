package apcore

import (
	"context"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type doubleIn struct {
	N    int      `json:"n"`
	Tags []string `json:"tags,omitempty"`
	When time.Time
}

type doubleOut struct {
	Twice int    `json:"twice"`
	Note  string `json:"note"`
}

// A typed module gets the same In whether its task runs where it was
// submitted or is resumed on another manager from the store, and ResultAs
// gives the same Out from every reader.
func TestTypedSameInputsOnEveryPath(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	var mu sync.Mutex
	seen := map[string]doubleIn{}
	mk := func(slots int) *TaskManager {
		reg := registry(t, map[string]Module{"math.double": Typed(func(ctx context.Context, in doubleIn) (doubleOut, error) {
			info, _ := TaskFromContext(ctx)
			mu.Lock()
			seen[info.TaskID] = in
			mu.Unlock()
			return doubleOut{Twice: in.N * 2, Note: "ok"}, nil
		})})
		return newManager(t, reg, WithStore(store), WithMaxConcurrent(slots))
	}
	local, busy := mk(4), mk(0) // busy accepts tasks and has no slot: another manager runs them
	mk(4)
	when := time.Date(2026, 12, 3, 10, 0, 0, 123456000, time.UTC)
	inputs, err := InputsOf(doubleIn{N: 21, Tags: []string{"a"}, When: when})
	require.NoError(t, err)

	var observed atomic.Pointer[TaskInfo]
	unsubscribe, err := local.Subscribe(func(info TaskInfo) {
		if info.Status == StatusCompleted {
			observed.Store(&info)
		}
	})
	require.NoError(t, err)
	defer unsubscribe()
	ids := map[string]*TaskManager{}
	id, err := local.Submit(ctx, "math.double", inputs)
	require.NoError(t, err)
	ids[id] = local
	id, err = local.Submit(ctx, "math.double", map[string]any{"n": 21, "tags": []string{"a"}, "When": when})
	require.NoError(t, err, "a hand-made map with Go values")
	ids[id] = local
	id, err = busy.Submit(ctx, "math.double", inputs, WithResumable())
	require.NoError(t, err)
	ids[id] = busy

	for id, m := range ids {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, info.Status, info.Error)
		mu.Lock()
		in := seen[id]
		mu.Unlock()
		assert.Equal(t, doubleIn{N: 21, Tags: []string{"a"}, When: when}, in, "task %s", id)
		out, err := ResultAs[doubleOut](info)
		require.NoError(t, err)
		assert.Equal(t, doubleOut{Twice: 42, Note: "ok"}, out)
		st, err := m.Status(ctx, id)
		require.NoError(t, err)
		out, err = ResultAs[doubleOut](st)
		require.NoError(t, err)
		assert.Equal(t, doubleOut{Twice: 42, Note: "ok"}, out, "from Status")
		asMap, err := ResultAs[map[string]any](st)
		require.NoError(t, err)
		assert.Equal(t, map[string]any{"twice": 42.0, "note": "ok"}, asMap, "the JSON form, whatever the store")
	}
	page, err := local.ListPage(ctx, ListOptions{Status: StatusCompleted})
	require.NoError(t, err)
	require.Len(t, page.Tasks, 3)
	for _, info := range page.Tasks {
		out, err := ResultAs[doubleOut](info)
		require.NoError(t, err)
		assert.Equal(t, 42, out.Twice, "from ListPage")
	}
	require.Eventually(t, func() bool { return observed.Load() != nil }, 5*time.Second, time.Millisecond)
	out, err := ResultAs[doubleOut](*observed.Load())
	require.NoError(t, err)
	assert.Equal(t, 42, out.Twice, "from an observer")
}

// A type mismatch fails the task with GENERAL_INVALID_INPUT naming the
// field and both types; the module is not called and the task is not
// retried.
func TestTypedMismatchFailsWithoutRetry(t *testing.T) {
	ctx := testCtx(t)
	var calls atomic.Int32
	reg := registry(t, map[string]Module{"math.double": Typed(func(ctx context.Context, in doubleIn) (int, error) {
		calls.Add(1)
		return in.N * 2, nil
	})})
	m := newManager(t, reg)
	for _, tc := range []struct {
		inputs map[string]any
		words  []string
	}{
		{map[string]any{"n": "21"}, []string{`"n"`, "string", "int"}},
		{map[string]any{"n": 2.5}, []string{`"n"`, "number", "int"}},
		{map[string]any{"tags": []any{"a", 3}}, []string{"tags", "number", "string"}},
		{map[string]any{"n": math.NaN()}, []string{"JSON"}},
	} {
		id, err := m.Submit(ctx, "math.double", tc.inputs, WithRetry(RetryConfig{MaxRetries: 3, RetryDelay: time.Millisecond}))
		require.NoError(t, err)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, StatusFailed, info.Status)
		assert.Equal(t, CodeInvalidInput, info.ErrorCode)
		assert.Equal(t, 0, info.RetryCount, "never retried")
		for _, w := range tc.words {
			assert.Contains(t, info.Error, w)
		}
	}
	assert.Zero(t, calls.Load(), "the module is never called with inputs that do not fit")
	id, err := m.Submit(ctx, "math.double", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status, "no inputs: the zero In")
}

func TestInputsOf(t *testing.T) {
	in, err := InputsOf(doubleIn{N: 3})
	require.NoError(t, err)
	assert.Equal(t, 3.0, in["n"], "the JSON form: a number is a float64")
	assert.NotContains(t, in, "tags", "omitempty holds")
	in, err = InputsOf(map[string]int{"a": 1})
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"a": 1.0}, in)
	in, err = InputsOf(nil)
	require.NoError(t, err)
	assert.Nil(t, in)
	for _, bad := range []any{42, "x", []int{1}, true, map[string]any{"f": func() {}}, math.Inf(1)} {
		_, err := InputsOf(bad)
		assert.ErrorIs(t, err, ErrInvalidInput, "InputsOf(%T)", bad)
	}
}

func TestResultAs(t *testing.T) {
	_, err := ResultAs[int](TaskInfo{TaskID: "t", Status: StatusRunning})
	assert.ErrorIs(t, err, ErrTaskNotCompleted)
	n, err := ResultAs[int](TaskInfo{TaskID: "t", Status: StatusCompleted, Result: 42})
	require.NoError(t, err)
	assert.Equal(t, 42, n)
	n, err = ResultAs[int](TaskInfo{TaskID: "t", Status: StatusCompleted, Result: 42.0})
	require.NoError(t, err)
	assert.Equal(t, 42, n, "the JSON-decoded form gives the same int")
	_, err = ResultAs[doubleOut](TaskInfo{TaskID: "t", Status: StatusCompleted, Result: map[string]any{"twice": "no"}})
	assert.ErrorIs(t, err, ErrInvalidInput)
	assert.ErrorContains(t, err, `field "twice" is a JSON string, want int`)
	out, err := ResultAs[*doubleOut](TaskInfo{TaskID: "t", Status: StatusCompleted})
	require.NoError(t, err)
	assert.Nil(t, out, "a nil result is a nil pointer")
}

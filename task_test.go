package apcore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type benchCtxKey struct{}

// sink keeps benchmark values alive, so that they escape as a task does.
var sink any

// BenchmarkTaskContext is what the hand-made taskCtx buys over the standard
// library's way to give a task its own cancellation: a context inside the
// task's handle costs no allocation, where WithCancelCause on a
// WithoutCancel parent allocates the two contexts and the cancel function.
// Each op makes a task's context, derives the attempt's timeout-less child
// a module typically makes, reads a value through it, and releases it.
func BenchmarkTaskContext(b *testing.B) {
	parent := context.WithValue(context.Background(), benchCtxKey{}, 1)
	var wg sync.WaitGroup
	b.Run("taskCtx", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			h := &struct{ ctx taskCtx }{taskCtx{parent: parent, wg: &wg}}
			sink = h.ctx.Value(benchCtxKey{})
			sink = h
		}
	})
	b.Run("WithCancelCause", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
			h := &struct {
				ctx    context.Context
				cancel context.CancelCauseFunc
			}{ctx, cancel}
			sink = h.ctx.Value(benchCtxKey{})
			sink = h
			cancel(nil)
		}
	})
}

type ctxKey struct{}

func TestTaskContextKeepsValuesButNotCancellation(t *testing.T) {
	type seen struct {
		value any
		err   error
	}
	out := make(chan seen, 1)
	release := make(chan struct{})
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		<-release
		out <- seen{ctx.Value(ctxKey{}), ctx.Err()}
		return nil, nil
	})
	m := newManager(t, registry(t, map[string]Module{"ctx.probe": mod}))
	reqCtx, cancelReq := context.WithTimeout(context.WithValue(context.Background(), ctxKey{}, "trace-7"), time.Hour)
	id, err := m.Submit(reqCtx, "ctx.probe", nil)
	require.NoError(t, err)
	cancelReq() // the request ends before the task runs its body
	close(release)
	got := <-out
	assert.Equal(t, "trace-7", got.value)
	assert.NoError(t, got.err, "the request's cancellation must not reach the task")
	info, err := m.Wait(testCtx(t), id)
	require.NoError(t, err)
	assert.Equal(t, StatusCompleted, info.Status)
}

// ---- 3. admission -----------------------------------------------------------

// The module's context is the manager's own type; contexts derived from it
// must see a cancel at once, and context.AfterFunc must keep its contract.
func TestTaskContextPropagatesToDerivedContexts(t *testing.T) {
	ctx := testCtx(t)
	type seen struct {
		child, timeout, after error
		stopped               bool
		deadline              bool
	}
	out := make(chan seen, 1)
	started := make(chan struct{})
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		child, cancelChild := context.WithCancel(ctx)
		defer cancelChild()
		withTimeout, cancelTimeout := context.WithTimeout(ctx, time.Hour)
		defer cancelTimeout()
		stopMe := context.AfterFunc(ctx, func() { t.Error("a stopped AfterFunc ran") })
		ran := make(chan struct{})
		context.AfterFunc(ctx, func() { close(ran) })
		var s seen
		s.stopped = stopMe()
		_, s.deadline = ctx.Deadline()
		close(started)
		<-child.Done()
		<-withTimeout.Done()
		<-ran
		s.child, s.timeout, s.after = context.Cause(child), withTimeout.Err(), ctx.Err()
		out <- s
		return nil, ctx.Err()
	})
	m := newManager(t, registry(t, map[string]Module{"derive.ctx": mod}))
	id, err := m.Submit(ctx, "derive.ctx", nil)
	require.NoError(t, err)
	<-started
	ok, err := m.Cancel(ctx, id)
	require.NoError(t, err)
	require.True(t, ok)
	s := <-out
	assert.True(t, s.stopped, "stop before the cancel reports true")
	assert.False(t, s.deadline, "a task has no deadline of its own")
	assert.ErrorIs(t, s.child, context.Canceled)
	assert.ErrorIs(t, s.timeout, context.Canceled)
	assert.ErrorIs(t, s.after, context.Canceled)

	// AfterFunc on an already cancelled context runs at once.
	var tc taskCtx
	tc.parent, tc.wg = context.Background(), new(sync.WaitGroup)
	tc.cancel()
	tc.cancel() // idempotent
	ran := make(chan struct{})
	stop := tc.AfterFunc(func() { close(ran) })
	<-ran
	assert.False(t, stop())
	assert.ErrorIs(t, tc.Err(), context.Canceled)
	<-tc.Done()
	assert.Equal(t, "apcore.taskContext", tc.String())
}

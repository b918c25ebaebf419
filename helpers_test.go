package apcore

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait in a test, so a bug fails the test instead of
// hanging it.
const testTimeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newManager builds a manager that is shut down (and checked to shut down
// cleanly) when the test ends.
func newManager(t *testing.T, exec Executor, opts ...Option) *TaskManager {
	t.Helper()
	m, err := NewTaskManager(exec, opts...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		require.NoError(t, m.Shutdown(ctx))
	})
	return m
}

// gate is a module that reports each start and then blocks until released
// (or, if it honours ctx, until its context ends).
type gate struct {
	started   chan string // receives the task's "name" input at each start
	release   chan struct{}
	honourCtx bool
	result    any
	calls     atomic.Int32
	running   atomic.Int32
	peak      atomic.Int32
}

func newGate(honourCtx bool) *gate {
	return &gate{started: make(chan string, 1024), release: make(chan struct{}), honourCtx: honourCtx, result: "done"}
}

func (g *gate) Execute(ctx context.Context, in map[string]any) (any, error) {
	g.calls.Add(1)
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for {
		p := g.peak.Load()
		if n <= p || g.peak.CompareAndSwap(p, n) {
			break
		}
	}
	name, _ := in["name"].(string)
	g.started <- name
	if g.honourCtx {
		select {
		case <-g.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	} else {
		<-g.release
	}
	return g.result, nil
}

// open releases every current and future call.
func (g *gate) open() { close(g.release) }

func (g *gate) waitStart(t *testing.T) string {
	t.Helper()
	select {
	case name := <-g.started:
		return name
	case <-time.After(testTimeout):
		t.Fatal("module did not start")
		return ""
	}
}

// registry builds a Registry from name/module pairs.
func registry(t *testing.T, mods map[string]Module) *Registry {
	t.Helper()
	r := NewRegistry()
	for id, m := range mods {
		require.NoError(t, r.Register(id, m))
	}
	return r
}

func constModule(v any) Module {
	return ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) { return v, nil })
}

func failModule(msg string, calls *atomic.Int32) Module {
	return ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if calls != nil {
			calls.Add(1)
		}
		return nil, errors.New(msg)
	})
}

// observed collects the records the manager announces, and lets a test wait
// for one.
type observed struct {
	mu   sync.Mutex
	all  []TaskInfo
	wake chan struct{}
}

func newObserved() *observed { return &observed{wake: make(chan struct{}, 1)} }

func (o *observed) observe(info TaskInfo) {
	o.mu.Lock()
	o.all = append(o.all, info)
	o.mu.Unlock()
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// waitFor blocks until a record matching ok has been announced.
func (o *observed) waitFor(t *testing.T, ok func(TaskInfo) bool) TaskInfo {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		o.mu.Lock()
		for _, info := range o.all {
			if ok(info) {
				o.mu.Unlock()
				return info
			}
		}
		o.mu.Unlock()
		select {
		case <-o.wake:
		case <-deadline:
			t.Fatal("the awaited transition never came")
		}
	}
}

func (o *observed) of(id string) []TaskInfo {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []TaskInfo
	for _, info := range o.all {
		if info.TaskID == id {
			out = append(out, info)
		}
	}
	return out
}

// logCapture is a slog handler that keeps every record and can signal a
// test when one with a given message arrives.
type logCapture struct {
	mu      sync.Mutex
	records []slog.Record
	notify  chan slog.Record
}

func newLogCapture() *logCapture { return &logCapture{notify: make(chan slog.Record, 1024)} }

func (l *logCapture) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCapture) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	l.records = append(l.records, r.Clone())
	l.mu.Unlock()
	select {
	case l.notify <- r.Clone():
	default:
	}
	return nil
}
func (l *logCapture) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCapture) WithGroup(string) slog.Handler      { return l }

func (l *logCapture) logger() *slog.Logger { return slog.New(l) }

// waitMessage blocks until a record with msg at level is logged.
func (l *logCapture) waitMessage(t *testing.T, level slog.Level, msg string) slog.Record {
	t.Helper()
	deadline := time.After(testTimeout)
	for {
		select {
		case r := <-l.notify:
			if r.Level == level && r.Message == msg {
				return r
			}
		case <-deadline:
			t.Fatalf("no %v log %q", level, msg)
		}
	}
}

func (l *logCapture) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.records)
}

// attr returns the value of the record's attribute key.
func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

// hookStore wraps a MemoryStore and lets a test fail or watch calls. It has
// Counter and ConditionalSaver only when the flags say so.
type hookStore struct {
	*MemoryStore
	mu          sync.Mutex
	saveErr     error
	getErr      error
	listErr     error
	expiredErr  error
	gets, lists atomic.Int32
	expiredCall chan struct{}
}

func newHookStore() *hookStore {
	return &hookStore{MemoryStore: NewMemoryStore(), expiredCall: make(chan struct{}, 1024)}
}

func (h *hookStore) setSaveErr(err error) { h.mu.Lock(); h.saveErr = err; h.mu.Unlock() }
func (h *hookStore) errs() (save, get, list, expired error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.saveErr, h.getErr, h.listErr, h.expiredErr
}

func (h *hookStore) Save(ctx context.Context, task TaskInfo) error {
	if err, _, _, _ := h.errs(); err != nil {
		return err
	}
	return h.MemoryStore.Save(ctx, task)
}

func (h *hookStore) SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error) {
	if err, _, _, _ := h.errs(); err != nil {
		return false, err
	}
	return h.MemoryStore.SaveIf(ctx, task, from...)
}

func (h *hookStore) Insert(ctx context.Context, task StoredTask, limit int) (bool, error) {
	if err, _, _, _ := h.errs(); err != nil {
		return false, err
	}
	return h.MemoryStore.Insert(ctx, task, limit)
}

func (h *hookStore) Update(ctx context.Context, task StoredTask, holder string) (bool, error) {
	if err, _, _, _ := h.errs(); err != nil {
		return false, err
	}
	return h.MemoryStore.Update(ctx, task, holder)
}

func (h *hookStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	h.gets.Add(1)
	if _, err, _, _ := h.errs(); err != nil {
		return TaskInfo{}, err
	}
	return h.MemoryStore.Get(ctx, id)
}

func (h *hookStore) List(ctx context.Context, s TaskStatus) ([]TaskInfo, error) {
	h.lists.Add(1)
	if _, _, err, _ := h.errs(); err != nil {
		return nil, err
	}
	return h.MemoryStore.List(ctx, s)
}

func (h *hookStore) ListExpired(ctx context.Context, before time.Time) ([]TaskInfo, error) {
	defer func() {
		select {
		case h.expiredCall <- struct{}{}:
		default:
		}
	}()
	if _, _, _, err := h.errs(); err != nil {
		return nil, err
	}
	return h.MemoryStore.ListExpired(ctx, before)
}

func (h *hookStore) Sweep(ctx context.Context, req SweepRequest) (int, error) {
	defer func() {
		select {
		case h.expiredCall <- struct{}{}:
		default:
		}
	}()
	if _, _, _, err := h.errs(); err != nil {
		return 0, err
	}
	return h.MemoryStore.Sweep(ctx, req)
}

func (h *hookStore) ListPage(ctx context.Context, opts ListOptions) (TaskPage, error) {
	h.lists.Add(1)
	if _, _, err, _ := h.errs(); err != nil {
		return TaskPage{}, err
	}
	return h.MemoryStore.ListPage(ctx, opts)
}

// plainStore hides every optional capability of the store it wraps.
type plainStore struct{ s TaskStore }

func (p plainStore) Save(ctx context.Context, t TaskInfo) error { return p.s.Save(ctx, t) }
func (p plainStore) Get(ctx context.Context, id string) (TaskInfo, error) {
	return p.s.Get(ctx, id)
}
func (p plainStore) List(ctx context.Context, st TaskStatus) ([]TaskInfo, error) {
	return p.s.List(ctx, st)
}
func (p plainStore) Delete(ctx context.Context, id string) error { return p.s.Delete(ctx, id) }
func (p plainStore) ListExpired(ctx context.Context, b time.Time) ([]TaskInfo, error) {
	return p.s.ListExpired(ctx, b)
}
func (p plainStore) Name() string { return p.s.Name() }
func nan() float64                { return math.NaN() }

// countingStore is a MemoryStore that counts its conditional writes.
type countingStore struct {
	*MemoryStore
	saveIfs atomic.Int64
}

func (c *countingStore) SaveIf(ctx context.Context, task TaskInfo, from ...TaskStatus) (bool, error) {
	c.saveIfs.Add(1)
	return c.MemoryStore.SaveIf(ctx, task, from...)
}

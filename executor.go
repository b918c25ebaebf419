package apcore

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
)

// Executor runs one module call. The manager calls it once per attempt, on a
// goroutine of its own, with the task's context: an Executor must return
// soon after ctx is done, because the concurrency slot stays taken until it
// returns.
type Executor interface {
	Call(ctx context.Context, moduleID string, inputs map[string]any) (any, error)
}

// ExecutorFunc adapts a plain function to the Executor interface.
type ExecutorFunc func(ctx context.Context, moduleID string, inputs map[string]any) (any, error)

// Call calls f.
func (f ExecutorFunc) Call(ctx context.Context, moduleID string, inputs map[string]any) (any, error) {
	return f(ctx, moduleID, inputs)
}

// ModuleResolver is an optional Executor capability: whether a module is
// known. When the executor has it, a task whose module it does not know
// fails at its first attempt with MODULE_NOT_FOUND, without calling the
// executor and without retries. (Following the protocol's newest text,
// Submit accepts such a task rather than refusing it.)
type ModuleResolver interface {
	HasModule(moduleID string) bool
}

// ModuleLister is an optional Executor capability: the ids of the modules
// it can run now. With a SharedStore, a manager whose executor has it
// claims only resumable tasks of those modules, and leaves the others
// pending for a replica that knows them (a rolling deploy that adds a
// module). An executor that is only a ModuleResolver gets the same
// behaviour one claim later: a claimed task of a module it does not know
// is handed back, unstarted. Registry implements both.
type ModuleLister interface {
	ModuleIDs() []string
}

// Module is one named unit of work. Execute should watch ctx.Done() and
// return ctx.Err() promptly once the task is cancelled or times out.
type Module interface {
	Execute(ctx context.Context, inputs map[string]any) (any, error)
}

// ModuleFunc adapts a plain function to the Module interface.
type ModuleFunc func(ctx context.Context, inputs map[string]any) (any, error)

// Execute calls f.
func (f ModuleFunc) Execute(ctx context.Context, inputs map[string]any) (any, error) {
	return f(ctx, inputs)
}

// Registry maps module ids to modules; it is an Executor, a ModuleResolver
// and a ModuleLister. Lookups take no lock (the map is replaced whole on Register), so a registry
// shared by many running tasks costs nothing on the hot path. The zero value
// is not ready; use NewRegistry.
type Registry struct {
	mu      sync.Mutex // serialises Register
	modules atomic.Pointer[map[string]Module]
	ids     atomic.Pointer[[]string] // sorted ids, replaced with modules
}

var (
	_ Executor       = (*Registry)(nil)
	_ ModuleResolver = (*Registry)(nil)
	_ ModuleLister   = (*Registry)(nil)
	_ Executor       = ExecutorFunc(nil)
	_ Module         = ModuleFunc(nil)
)

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	r := &Registry{}
	empty := map[string]Module{}
	r.modules.Store(&empty)
	return r
}

// Register adds m under moduleID. It fails with GENERAL_INVALID_INPUT when the
// id is not valid (see ValidateModuleID), when m is nil, or when the id is
// already registered.
func (r *Registry) Register(moduleID string, m Module) error {
	if err := ValidateModuleID(moduleID); err != nil {
		return err
	}
	if isNil(m) {
		return invalidf("Register: module %q is nil", moduleID)
	}
	if r == nil {
		return invalidf("Register: the registry is nil")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := *r.modules.Load()
	if _, dup := old[moduleID]; dup {
		return invalidf("Register: module %q is already registered", moduleID)
	}
	next := make(map[string]Module, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[moduleID] = m
	ids := slices.Sorted(maps.Keys(next))
	r.ids.Store(&ids)
	r.modules.Store(&next)
	return nil
}

// ModuleIDs returns the registered module ids, sorted. The slice is shared:
// do not change it.
func (r *Registry) ModuleIDs() []string {
	if ids := r.ids.Load(); ids != nil {
		return *ids
	}
	return []string{}
}

// HasModule reports whether moduleID is registered.
func (r *Registry) HasModule(moduleID string) bool {
	_, ok := (*r.modules.Load())[moduleID]
	return ok
}

// Call runs the module registered under moduleID. An unknown id fails with
// MODULE_NOT_FOUND.
func (r *Registry) Call(ctx context.Context, moduleID string, inputs map[string]any) (any, error) {
	m, ok := (*r.modules.Load())[moduleID]
	if !ok {
		return nil, newError(CodeModuleNotFound, "Module not found: %s", moduleID)
	}
	return m.Execute(ctx, inputs)
}

// maxModuleIDLen is the protocol's limit on a module id's length.
const maxModuleIDLen = 192

// ValidateModuleID checks moduleID against the protocol's grammar: dot-separated
// segments, each a lowercase ASCII letter followed by lowercase letters,
// digits or underscores (^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$), at most 192
// characters in all. It returns a GENERAL_INVALID_INPUT error saying what is
// wrong, or nil.
func ValidateModuleID(moduleID string) error {
	if moduleID == "" {
		return invalidf("module id is empty")
	}
	if len(moduleID) > maxModuleIDLen {
		return invalidf("module id is %d bytes long; the limit is %d", len(moduleID), maxModuleIDLen)
	}
	segStart := true
	for i := 0; i < len(moduleID); i++ {
		c := moduleID[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9') || c == '_':
			if segStart {
				return invalidf("module id %q: a segment must start with a lowercase letter (offset %d)", moduleID, i)
			}
		case c == '.':
			if segStart {
				return invalidf("module id %q: empty segment at offset %d", moduleID, i)
			}
			segStart = true
			continue
		default:
			return invalidf("module id %q: byte %q at offset %d is not allowed (use a-z, 0-9, _ and .)", moduleID, c, i)
		}
		segStart = false
	}
	if segStart {
		return invalidf("module id %q ends with '.'", moduleID)
	}
	return nil
}

// isNil reports whether v is nil or holds a nil pointer, func, map, slice,
// channel or interface: a typed nil (a nil *Registry passed as an Executor,
// say) would otherwise pass a nil check and panic on first use.
func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Pointer, reflect.Func, reflect.Map, reflect.Slice, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return rv.IsNil()
	}
	return false
}

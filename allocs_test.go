package apcore

import (
	"context"
	"testing"
)

// A Submit without options allocates the task's handle, its id and its
// stored record, and nothing for its options (their config stays on the
// stack: a closure that took it once made every Submit allocate it).
func TestSubmitAllocations(t *testing.T) {
	m := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}), WithMaxConcurrent(0), WithMaxTasks(1<<30))
	ctx := context.Background()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := m.Submit(ctx, "a.x", nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("%.1f allocations per Submit", allocs)
	if allocs > 3 {
		t.Errorf("%.1f allocations per Submit, want at most 3 (handle, id, record)", allocs)
	}
}

package sqlstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Drain in a rolling deploy: a running task and a queued plain task both
// run to their end; the queued one is started once and never cancelled.
func TestDrainRunsQueuedPlainTasks(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			release := make(chan struct{})
			starts := make(chan string, 8)
			reg := apcore.NewRegistry()
			require.NoError(t, reg.Register("a.job", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
				info, _ := apcore.TaskFromContext(ctx)
				starts <- info.TaskID
				select {
				case <-release:
					return "done", nil
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			})))
			m, err := apcore.NewTaskManager(reg, apcore.WithStore(b.open(t)), apcore.WithMaxConcurrent(1))
			require.NoError(t, err)
			c := ctx(t)
			first, err := m.Submit(c, "a.job", nil)
			require.NoError(t, err)
			require.Equal(t, first, <-starts)
			queued, err := m.Submit(c, "a.job", nil)
			require.NoError(t, err)
			drained := make(chan error, 1)
			go func() {
				dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				drained <- m.Drain(dctx)
			}()
			close(release)
			require.NoError(t, <-drained)
			for _, id := range []string{first, queued} {
				info, err := m.Status(c, id)
				require.NoError(t, err)
				assert.Equal(t, apcore.StatusCompleted, info.Status, "task %s", id)
			}
			close(starts)
			n := 0
			for range starts {
				n++
			}
			assert.Equal(t, 1, n, "the queued task started once")
		})
	}
}

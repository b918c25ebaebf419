package sqlstore_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Results and messages that the database's text cannot hold as they are
// never leave a record running: a NUL in a result's string is kept (JSON
// escape), a NUL or invalid UTF-8 in an error or progress message is
// stored replaced by U+FFFD, and every reader sees the task ended.
func TestUnstorableTextEndsTheTask(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			reg := apcore.NewRegistry()
			require.NoError(t, reg.Register("text.result", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
				return map[string]any{"s": "a\x00b", "bad": "x\xffy"}, nil
			})))
			require.NoError(t, reg.Register("text.error", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
				return nil, errors.New("broken\x00message\xfe")
			})))
			require.NoError(t, reg.Register("text.progress", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				if err := apcore.ReportProgress(ctx, 50, "half\x00way\xff"); err != nil {
					return nil, err
				}
				return "done", nil
			})))
			m := manager(t, reg, store)
			other := manager(t, reg, b.open(t)) // another replica, its own pool
			// every reader sees the same ended record
			everyReader := func(id string, status apcore.TaskStatus, check func(what string, info apcore.TaskInfo)) {
				t.Helper()
				_, err := m.Wait(ctx(t), id) // the end first; then every reader
				require.NoError(t, err)
				reads := map[string]func() (apcore.TaskInfo, error){
					"Wait":         func() (apcore.TaskInfo, error) { return m.Wait(ctx(t), id) },
					"Status":       func() (apcore.TaskInfo, error) { return m.Status(ctx(t), id) },
					"store Get":    func() (apcore.TaskInfo, error) { return store.Get(ctx(t), id) },
					"other Wait":   func() (apcore.TaskInfo, error) { return other.Wait(ctx(t), id) },
					"other Status": func() (apcore.TaskInfo, error) { return other.Status(ctx(t), id) },
					"other List": func() (apcore.TaskInfo, error) {
						all, err := other.List(ctx(t), status)
						for _, info := range all {
							if info.TaskID == id {
								return info, err
							}
						}
						return apcore.TaskInfo{}, fmt.Errorf("not listed %s: %v", status, err)
					},
				}
				for what, read := range reads {
					info, err := read()
					require.NoError(t, err, what)
					assert.Equal(t, status, info.Status, what)
					check(what, info)
				}
			}

			id, err := m.Submit(ctx(t), "text.result", nil)
			require.NoError(t, err)
			want := map[string]any{"s": "a\x00b", "bad": "x\uFFFDy"} // encoding/json replaces invalid UTF-8
			everyReader(id, apcore.StatusCompleted, func(what string, info apcore.TaskInfo) {
				assert.Equal(t, want, info.Result, "%s: the NUL in the result's string is kept", what)
			})
			res, err := m.Result(ctx(t), id)
			require.NoError(t, err)
			assert.Equal(t, want, res)

			id, err = m.Submit(ctx(t), "text.error", nil)
			require.NoError(t, err)
			_, err = m.Wait(ctx(t), id)
			require.NoError(t, err)
			everyReader(id, apcore.StatusFailed, func(what string, info apcore.TaskInfo) {
				assert.Equal(t, "broken\uFFFDmessage\uFFFD", info.Error, what)
				assert.Equal(t, apcore.CodeModuleExecuteError, info.ErrorCode, what)
			})

			id, err = m.Submit(ctx(t), "text.progress", nil)
			require.NoError(t, err)
			_, err = m.Wait(ctx(t), id)
			require.NoError(t, err)
			everyReader(id, apcore.StatusCompleted, func(what string, info apcore.TaskInfo) {
				assert.Equal(t, "done", info.Result, what)
				assert.Equal(t, "half\uFFFDway\uFFFD", info.ProgressMessage, what)
			})

			// Nothing is left active.
			n, err := store.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			assert.Zero(t, n)
		})
	}
}

// A result that JSON cannot hold fails the task with GENERAL_INVALID_INPUT
// before it reaches the store, and the store holds that failure.
func TestUnencodableResultsFailTheTask(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			results := map[string]any{
				"nan": math.NaN(), "inf": math.Inf(1), "chan": make(chan int), "func": func() {},
				"complex": complex(1, 2), "nested_nan": map[string]any{"x": []any{math.Inf(-1)}},
			}
			reg := apcore.NewRegistry()
			for name, v := range results {
				require.NoError(t, reg.Register("bad."+name, apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
					return v, nil
				})))
			}
			m := manager(t, reg, store)
			for name := range results {
				id, err := m.Submit(ctx(t), "bad."+name, nil)
				require.NoError(t, err)
				info, err := m.Wait(ctx(t), id)
				require.NoError(t, err)
				assert.Equal(t, apcore.StatusFailed, info.Status, name)
				assert.Equal(t, apcore.CodeInvalidInput, info.ErrorCode, name)
				stored, err := store.Get(ctx(t), id)
				require.NoError(t, err)
				assert.Equal(t, apcore.StatusFailed, stored.Status, name)
				assert.Equal(t, apcore.CodeInvalidInput, stored.ErrorCode, name)
				assert.Nil(t, stored.Result, name)
			}
		})
	}
}

// Task ids that PostgreSQL cannot hold are simply not there.
func TestUnstorableTaskIDs(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			store := b.open(t)
			reg := apcore.NewRegistry()
			m := manager(t, reg, store)
			for _, id := range []string{"nul\x00id", "bad\xff\xfeutf8", "\x00"} {
				_, err := m.Status(ctx(t), id)
				assert.ErrorIs(t, err, apcore.ErrTaskNotFound, "Status(%q)", id)
				_, err = m.Result(ctx(t), id)
				assert.ErrorIs(t, err, apcore.ErrTaskNotFound, "Result(%q)", id)
				_, err = m.Wait(ctx(t), id)
				assert.ErrorIs(t, err, apcore.ErrTaskNotFound, "Wait(%q)", id)
				ok, err := m.Cancel(ctx(t), id)
				assert.NoError(t, err, "Cancel(%q)", id)
				assert.False(t, ok)
				_, err = store.Get(ctx(t), id)
				assert.ErrorIs(t, err, apcore.ErrTaskNotFound, "Get(%q)", id)
				assert.NoError(t, store.Delete(ctx(t), id), "Delete(%q)", id)
				removed, err := store.Remove(ctx(t), id)
				assert.NoError(t, err, "Remove(%q)", id)
				assert.False(t, removed)
				lost, err := store.Lost(ctx(t), "owner", []string{id})
				assert.NoError(t, err)
				assert.Equal(t, []string{id}, lost)
			}
		})
	}
}

package apcore

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func TestNewTaskManagerValidates(t *testing.T) {
	var nilFunc ExecutorFunc
	cases := []struct {
		name string
		exec Executor
		opts []Option
	}{
		{"nil executor", nil, nil},
		{"nil executor func", nilFunc, nil},
		{"negative concurrency", NewRegistry(), []Option{WithMaxConcurrent(-1)}},
		{"negative tasks", NewRegistry(), []Option{WithMaxTasks(-1)}},
		{"nil store", NewRegistry(), []Option{WithStore(nil)}},
		{"nil option", NewRegistry(), []Option{nil}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := NewTaskManager(tc.exec, tc.opts...)
			require.ErrorIs(t, err, ErrInvalidInput)
			assert.Equal(t, CodeInvalidInput, CodeOf(err))
			assert.Nil(t, m)
		})
	}
	m := newManager(t, NewRegistry(), WithLogger(nil))
	assert.Equal(t, "InMemoryTaskStore", m.Store().Name())
}

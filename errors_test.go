package apcore

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func TestErrorMatchingByCode(t *testing.T) {
	cause := errors.New("dial tcp: refused")
	err := fmt.Errorf("saving: %w", &Error{Code: CodeTaskStoreUnavailable, Message: "task store: save", Cause: cause})
	assert.ErrorIs(t, err, ErrStoreUnavailable)
	assert.ErrorIs(t, err, cause)
	assert.NotErrorIs(t, err, ErrTaskNotFound)
	assert.Equal(t, CodeTaskStoreUnavailable, CodeOf(err))
	assert.Equal(t, ErrorCode(""), CodeOf(cause))
	assert.Equal(t, ErrorCode(""), CodeOf(nil))
	assert.Equal(t, "saving: task store: save: dial tcp: refused", err.Error())
	assert.Equal(t, "TASK_NOT_FOUND", ErrTaskNotFound.Error())
}

// renewFails is a shared store whose lease calls fail as a store's own
// typed error, naming the store's step.
type renewFails struct{ *MemoryStore }

func (r renewFails) Renew(ctx context.Context, req LeaseRequest) (bool, error) {
	return false, &Error{Code: CodeTaskStoreUnavailable, Message: "mystore: renew lease", Cause: errors.New("dial tcp: connection refused")}
}

// A store's typed error keeps its code and gets the caller's operation in
// front: the message names what the caller asked for, not only the
// store's step (issue #16).
func TestStoreErrorNamesTheCallersOperation(t *testing.T) {
	m := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}), WithStore(renewFails{NewMemoryStore()}))
	_, err := m.Submit(testCtx(t), "a.x", nil)
	require.ErrorIs(t, err, ErrStoreUnavailable)
	assert.Contains(t, err.Error(), "Submit:")
	assert.Contains(t, err.Error(), "mystore: renew lease: dial tcp: connection refused")
	// A code other than TASK_STORE_UNAVAILABLE is the store's answer, kept as it is.
	_, err = m.Status(testCtx(t), "nope")
	require.ErrorIs(t, err, ErrTaskNotFound)
	assert.Equal(t, "Task not found: nope", err.Error())
}

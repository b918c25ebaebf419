package apcore

import (
	"errors"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
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

package apcore

import (
	"context"
	"regexp"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func TestRegistry(t *testing.T) {
	r := NewRegistry()
	require.NoError(t, r.Register("a.b", constModule(1)))
	require.ErrorIs(t, r.Register("a.b", constModule(2)), ErrInvalidInput)
	require.ErrorIs(t, r.Register("A", constModule(2)), ErrInvalidInput)
	require.ErrorIs(t, r.Register("a.c", nil), ErrInvalidInput)
	var nilFunc ModuleFunc
	require.ErrorIs(t, r.Register("a.c", nilFunc), ErrInvalidInput)
	assert.True(t, r.HasModule("a.b"))
	assert.False(t, r.HasModule("a.c"))
	v, err := r.Call(context.Background(), "a.b", nil)
	require.NoError(t, err)
	assert.Equal(t, 1, v)
	_, err = r.Call(context.Background(), "a.c", nil)
	require.ErrorIs(t, err, ErrModuleNotFound)
}

// ---- 12. wire format ----------------------------------------------------------------

var moduleIDGrammar = regexp.MustCompile(`^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$`)

// FuzzValidateModuleID: ValidateModuleID agrees with the protocol's grammar.
func FuzzValidateModuleID(f *testing.F) {
	for _, s := range []string{"", "a", "data.process_batch", "a.b.c", "A", "a..b", ".a", "a.", "a.1b", "a_b.c_d9", "é", "a-b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		want := len(id) <= maxModuleIDLen && moduleIDGrammar.MatchString(id)
		err := ValidateModuleID(id)
		if (err == nil) != want {
			t.Fatalf("ValidateModuleID(%q) = %v, grammar says valid=%v", id, err, want)
		}
		if err != nil && CodeOf(err) != CodeInvalidInput {
			t.Fatalf("error has code %q", CodeOf(err))
		}
	})
}

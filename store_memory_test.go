package apcore_test

import (
	"context"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/storetest"
)

// The memory store is the reference implementation: it must pass the public
// store checker.
func TestMemoryStoreContract(t *testing.T) {
	err := storetest.TestStore(context.Background(), func() (apcore.TaskStore, error) {
		return apcore.NewMemoryStore(), nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

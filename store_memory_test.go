package apcore_test

import (
	"context"
	"errors"
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

// Insert of an id that is there already fails and leaves the store as it
// was: the record, its place in the order and the counts.
func TestMemoryStoreInsertDuplicate(t *testing.T) {
	ctx := context.Background()
	s := apcore.NewMemoryStore()
	first := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "a", ModuleID: "m.one", Status: apcore.StatusPending}}
	second := apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "b", ModuleID: "m.two", Status: apcore.StatusRunning}}
	for _, st := range []apcore.StoredTask{first, second} {
		if ok, err := s.Insert(ctx, st, 10); !ok || err != nil {
			t.Fatalf("Insert(%s): %v %v", st.Info.TaskID, ok, err)
		}
	}
	dup := first
	dup.Info.ModuleID = "m.other"
	if ok, err := s.Insert(ctx, dup, 10); ok || !errors.Is(err, apcore.ErrInvalidInput) {
		t.Fatalf("Insert of a present id: %v %v, want false and GENERAL_INVALID_INPUT", ok, err)
	}
	got, err := s.Get(ctx, "a")
	if err != nil || got.ModuleID != "m.one" {
		t.Fatalf("the first record changed: %+v %v", got, err)
	}
	all, _ := s.List(ctx, "")
	if len(all) != 2 || all[0].TaskID != "a" || all[1].TaskID != "b" {
		t.Fatalf("order after a refused Insert: %v", all)
	}
	if n, _ := s.Count(ctx); n != 2 {
		t.Fatalf("Count after a refused Insert: %d", n)
	}
	if ok, err := s.Insert(ctx, apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "c", Status: apcore.StatusPending}}, 10); !ok || err != nil {
		t.Fatalf("Insert after a refused one: %v %v", ok, err)
	}
	if all, _ := s.List(ctx, ""); len(all) != 3 || all[2].TaskID != "c" {
		t.Fatalf("order after a later Insert: %v", all)
	}
}

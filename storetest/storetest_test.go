package storetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// plain hides the memory store's optional interfaces: a store with only
// the five methods must pass too.
type plain struct{ s *apcore.MemoryStore }

func (p plain) Save(ctx context.Context, t apcore.TaskInfo) error { return p.s.Save(ctx, t) }
func (p plain) Get(ctx context.Context, id string) (apcore.TaskInfo, error) {
	return p.s.Get(ctx, id)
}
func (p plain) List(ctx context.Context, st apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	return p.s.List(ctx, st)
}
func (p plain) Delete(ctx context.Context, id string) error { return p.s.Delete(ctx, id) }
func (p plain) ListExpired(ctx context.Context, b time.Time) ([]apcore.TaskInfo, error) {
	return p.s.ListExpired(ctx, b)
}
func (p plain) Name() string { return "plain" }

func TestStoreWithoutOptionalInterfacesPasses(t *testing.T) {
	err := storetest.TestStore(context.Background(), func() (apcore.TaskStore, error) {
		return plain{apcore.NewMemoryStore()}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// aliasing returns the stored result itself from Get: a copy violation.
type aliasing struct {
	*apcore.MemoryStore
	mu      sync.Mutex
	results map[string]any
}

func (a *aliasing) Save(ctx context.Context, t apcore.TaskInfo) error {
	a.mu.Lock()
	a.results[t.TaskID] = t.Result
	a.mu.Unlock()
	return a.MemoryStore.Save(ctx, t)
}

func (a *aliasing) Get(ctx context.Context, id string) (apcore.TaskInfo, error) {
	t, err := a.MemoryStore.Get(ctx, id)
	a.mu.Lock()
	t.Result = a.results[id]
	a.mu.Unlock()
	return t, err
}

func TestCheckerCatchesAliasing(t *testing.T) {
	err := storetest.TestStore(context.Background(), func() (apcore.TaskStore, error) {
		return &aliasing{MemoryStore: apcore.NewMemoryStore(), results: map[string]any{}}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "copies: changing the saved record's result changed the store") {
		t.Fatalf("aliasing not reported: %v", err)
	}
}

// sloppyStore breaks several rules on purpose: the checker must say so.
type sloppyStore struct{ *apcore.MemoryStore }

// ListExpired forgets to be strict and to skip active records.
func (s sloppyStore) ListExpired(ctx context.Context, before time.Time) ([]apcore.TaskInfo, error) {
	all, err := s.MemoryStore.List(ctx, "")
	var out []apcore.TaskInfo
	for _, t := range all {
		if !t.CompletedAt.After(before) {
			out = append(out, t)
		}
	}
	return out, err
}

// Name is empty.
func (s sloppyStore) Name() string { return "" }

func TestCheckerCatchesViolations(t *testing.T) {
	err := storetest.TestStore(context.Background(), func() (apcore.TaskStore, error) {
		return sloppyStore{apcore.NewMemoryStore()}, nil
	})
	if err == nil {
		t.Fatal("the checker passed a store that breaks the contract")
	}
	for _, want := range []string{"name: Name() is empty", "list expired: ListExpired(cutoff)"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("report lacks %q:\n%v", want, err)
		}
	}
}

// TestRunOnMemoryStore runs every check, each a subtest, on the reference
// store.
func TestRunOnMemoryStore(t *testing.T) {
	storetest.Run(t, func() (apcore.TaskStore, error) { return apcore.NewMemoryStore(), nil })
}

// anyModule claims without the module filter: Claim's Modules ignored.
type anyModule struct{ *apcore.MemoryStore }

func (a anyModule) Claim(ctx context.Context, req apcore.ClaimRequest) ([]apcore.StoredTask, error) {
	req.Modules = nil
	return a.MemoryStore.Claim(ctx, req)
}

func TestCheckerCatchesAClaimThatIgnoresModules(t *testing.T) {
	err := storetest.TestStore(context.Background(), func() (apcore.TaskStore, error) {
		return anyModule{apcore.NewMemoryStore()}, nil
	})
	if err == nil || !strings.Contains(err.Error(), "shared: claim by module: Claim(1) of modules [a c] took [cm-0]") ||
		!strings.Contains(err.Error(), `took cm-0, of module "storetest.b"`) {
		t.Fatalf("a Claim that ignores Modules not reported: %v", err)
	}
}

func TestReplicasOnMemoryStore(t *testing.T) {
	if err := storetest.TestReplicas(context.Background(), apcore.NewMemoryStore()); err != nil {
		t.Fatal(err)
	}
	err := storetest.TestReplicas(context.Background(), plain{apcore.NewMemoryStore()})
	if !errors.Is(err, apcore.ErrInvalidInput) {
		t.Fatalf("a store without SaveIf must be refused, got %v", err)
	}
}

// decodingStore hands out results JSON-decoded without saying so (it is no
// apcore.JSONStore), so a reader of the store and a reader of the owner's
// handle see different Go types: TestReplicas must notice.
type decodingStore struct{ *apcore.MemoryStore }

func decoded(info apcore.TaskInfo) apcore.TaskInfo {
	b, _ := json.Marshal(info.Result)
	info.Result = nil
	_ = json.Unmarshal(b, &info.Result)
	return info
}

func (d decodingStore) Get(ctx context.Context, id string) (apcore.TaskInfo, error) {
	info, err := d.MemoryStore.Get(ctx, id)
	return decoded(info), err
}

func (d decodingStore) List(ctx context.Context, st apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	all, err := d.MemoryStore.List(ctx, st)
	for i := range all {
		all[i] = decoded(all[i])
	}
	return all, err
}

func TestReplicasNoticesReadersThatDisagree(t *testing.T) {
	err := storetest.TestReplicas(context.Background(), decodingStore{apcore.NewMemoryStore()})
	if err == nil || !strings.Contains(err.Error(), "readers disagree") {
		t.Fatalf("a store that changes result types behind the manager's back must fail, got %v", err)
	}
}

func BenchmarkManagerOnMemoryStore(b *testing.B) {
	storetest.BenchmarkManager(b, func() (apcore.TaskStore, error) { return apcore.NewMemoryStore(), nil }, 10_000)
}

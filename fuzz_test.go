package apcore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// fixtureRecords returns every task record in the conformance fixtures, as
// raw JSON, to seed the fuzzers with real data.
func fixtureRecords(f *testing.F) [][]byte {
	f.Helper()
	var out [][]byte
	for _, name := range []string{"async_task_evolution.json", "async_task_cancellation.json"} {
		data, err := os.ReadFile(filepath.Join(fixturesDir(), name))
		if err != nil {
			f.Fatalf("conformance fixtures are required: %v", err)
		}
		var file struct {
			TestCases []struct {
				TaskInfo    json.RawMessage   `json:"task_info"`
				StoredTasks []json.RawMessage `json:"stored_tasks"`
				StoredExp   []json.RawMessage `json:"stored_expired_tasks"`
			} `json:"test_cases"`
		}
		if err := json.Unmarshal(data, &file); err != nil {
			f.Fatal(err)
		}
		for _, c := range file.TestCases {
			if len(c.TaskInfo) > 0 {
				out = append(out, c.TaskInfo)
			}
			for _, r := range append(c.StoredTasks, c.StoredExp...) {
				out = append(out, r)
			}
		}
	}
	if len(out) == 0 {
		f.Fatal("the fixtures hold no task records")
	}
	return out
}

// FuzzTaskInfoUnmarshalJSON: decoding never panics, and whatever decodes
// re-encodes to a wire value that decodes and re-encodes to itself.
func FuzzTaskInfoUnmarshalJSON(f *testing.F) {
	for _, rec := range fixtureRecords(f) {
		f.Add(rec)
	}
	f.Add([]byte(`{"task_id":"t","module_id":"m","status":"running","submitted_at":0.000001,"started_at":253402300799,"completed_at":null,"result":[1,"x",{"a":null}],"error":"","retry_count":3,"max_retries":9}`))
	f.Add([]byte(`{"task_id":"t","module_id":"m","status":"failed","submitted_at":-62135596800,"error":"e"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var info TaskInfo
		if err := json.Unmarshal(data, &info); err != nil {
			return
		}
		first, err := json.Marshal(info)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		var again TaskInfo
		if err := json.Unmarshal(first, &again); err != nil {
			t.Fatalf("encoded record does not decode: %v\n%s", err, first)
		}
		second, err := json.Marshal(again)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(first, second) {
			t.Fatalf("wire value changed on a round trip:\n%s\n%s", first, second)
		}
	})
}

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

// FuzzComputeDelay: for any field values, the delay is never negative,
// never above the cap, never shrinks as the attempt grows, and never panics.
func FuzzComputeDelay(f *testing.F) {
	f.Add(int64(time.Second), 2.0, int64(30*time.Second), 5)
	f.Add(int64(100*time.Millisecond), 1.0, int64(time.Second), 0)
	f.Add(int64(0), 0.0, int64(0), 3)
	f.Add(int64(-5), -3.0, int64(-7), -1)
	f.Add(int64(math.MaxInt64), math.MaxFloat64, int64(math.MaxInt64), math.MaxInt32)
	f.Add(int64(1), math.Inf(1), int64(math.MaxInt64), 1<<40)
	f.Add(int64(1), math.NaN(), int64(10), 2)
	f.Fuzz(func(t *testing.T, delay int64, mult float64, maxDelay int64, attempt int) {
		cfg := RetryConfig{RetryDelay: time.Duration(delay), BackoffMultiplier: mult, MaxRetryDelay: time.Duration(maxDelay)}
		ceiling := max(cfg.withDefaults().MaxRetryDelay, 0)
		d := cfg.ComputeDelay(attempt)
		if d < 0 || d > ceiling {
			t.Fatalf("ComputeDelay(%d) = %v, outside [0, %v] for %+v", attempt, d, ceiling, cfg)
		}
		if attempt < math.MaxInt {
			if next := cfg.ComputeDelay(attempt + 1); next < d {
				t.Fatalf("ComputeDelay shrank from %v to %v at attempt %d for %+v", d, next, attempt, cfg)
			}
		}
	})
}

// FuzzMemoryStore runs a random sequence of store operations on a
// MemoryStore and on a plain model of the contract, and compares every
// answer.
func FuzzMemoryStore(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 1, 4, 5, 3, 0, 6, 1})
	f.Add([]byte("save get list delete count saveif expired"))
	f.Fuzz(func(t *testing.T, ops []byte) {
		ctx := context.Background()
		s := NewMemoryStore()
		var order []string // the model: ids in insertion order
		model := map[string]TaskInfo{}
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		for len(ops) > 0 {
			op, id := next()%7, fmt.Sprintf("id-%d", next()%6)
			st := allStatuses[int(next())%numStatuses]
			info := TaskInfo{TaskID: id, ModuleID: "m", Status: st, SubmittedAt: base}
			if st.IsTerminal() && next()%4 != 0 {
				info.CompletedAt = base.Add(time.Duration(next()) * time.Second)
			}
			switch op {
			case 0: // Save
				if err := s.Save(ctx, info); err != nil {
					t.Fatal(err)
				}
				if _, ok := model[id]; !ok {
					order = append(order, id)
				}
				model[id] = info
			case 1: // SaveIf
				from := []TaskStatus{allStatuses[int(next())%numStatuses], allStatuses[int(next())%numStatuses]}
				saved, err := s.SaveIf(ctx, info, from...)
				if err != nil {
					t.Fatal(err)
				}
				cur, ok := model[id]
				want := ok && hasStatus(from, cur.Status)
				if saved != want {
					t.Fatalf("SaveIf(%s %s from %v) = %v, model says %v", id, st, from, saved, want)
				}
				if want {
					model[id] = info
				}
			case 2: // Delete
				if err := s.Delete(ctx, id); err != nil {
					t.Fatal(err)
				}
				if _, ok := model[id]; ok {
					delete(model, id)
					order = slices.DeleteFunc(order, func(x string) bool { return x == id })
				}
			case 3: // Get
				got, err := s.Get(ctx, id)
				want, ok := model[id]
				if ok != (err == nil) || (ok && (got.Status != want.Status || !got.CompletedAt.Equal(want.CompletedAt))) {
					t.Fatalf("Get(%s) = %v %v, model has %v %v", id, got, err, want, ok)
				}
			case 4: // List
				filter := st
				if next()%2 == 0 {
					filter = ""
				}
				got, err := s.List(ctx, filter)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, x := range order {
					if filter == "" || model[x].Status == filter {
						want = append(want, x)
					}
				}
				if g := idsOf(got); !slices.Equal(g, want) {
					t.Fatalf("List(%q) = %v, model says %v", filter, g, want)
				}
			case 5: // ListExpired
				before := base.Add(time.Duration(next()) * time.Second)
				got, err := s.ListExpired(ctx, before)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, x := range order {
					r := model[x]
					if r.Status.IsTerminal() && !r.CompletedAt.IsZero() && r.CompletedAt.Before(before) {
						want = append(want, x)
					}
				}
				if g := idsOf(got); !slices.Equal(g, want) {
					t.Fatalf("ListExpired(%v) = %v, model says %v", before, g, want)
				}
			case 6: // Count
				sets := [][]TaskStatus{nil, {st}, activeStatuses, {st, StatusCompleted, st}}
				set := sets[int(next())%len(sets)]
				got, err := s.Count(ctx, set...)
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				for _, r := range model {
					if len(set) == 0 || hasStatus(set, r.Status) {
						want++
					}
				}
				if got != want {
					t.Fatalf("Count(%v) = %d, model says %d", set, got, want)
				}
			}
		}
	})
}

func idsOf(infos []TaskInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.TaskID)
	}
	return out
}

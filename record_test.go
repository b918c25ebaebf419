package apcore

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ---- 1. lifecycle ---------------------------------------------------------

func TestStatusPredicates(t *testing.T) {
	for _, s := range allStatuses {
		assert.NotEqual(t, s.IsActive(), s.IsTerminal(), s)
	}
	assert.False(t, TaskStatus("bogus").IsActive())
	assert.False(t, TaskStatus("bogus").IsTerminal())
}

func TestTaskInfoJSON(t *testing.T) {
	sub := time.Date(2023, 11, 14, 22, 13, 20, 123456000, time.UTC)
	info := TaskInfo{TaskID: "t1", ModuleID: "a.b", Status: StatusPending, SubmittedAt: sub, MaxRetries: 2}
	b, err := json.Marshal(info)
	require.NoError(t, err)
	assert.JSONEq(t, `{"task_id":"t1","module_id":"a.b","status":"pending","submitted_at":1700000000.123456,
		"started_at":null,"completed_at":null,"result":null,"error":null,"retry_count":0,"max_retries":2}`, string(b))

	info.Status, info.StartedAt, info.CompletedAt, info.Error, info.RetryCount = StatusFailed, sub.Add(time.Second), sub.Add(2*time.Second), "boom", 2
	b, err = json.Marshal(info)
	require.NoError(t, err)
	var back TaskInfo
	require.NoError(t, json.Unmarshal(b, &back))
	assert.Equal(t, info.TaskID, back.TaskID)
	assert.True(t, info.SubmittedAt.Equal(back.SubmittedAt))
	assert.True(t, info.StartedAt.Equal(back.StartedAt))
	assert.True(t, info.CompletedAt.Equal(back.CompletedAt))
	assert.Equal(t, "boom", back.Error)
	assert.Equal(t, 2, back.RetryCount)

	// a slice of records, through the value receiver
	b, err = json.Marshal([]TaskInfo{info})
	require.NoError(t, err)
	assert.Contains(t, string(b), `"status":"failed"`)
}

func TestTaskInfoJSONRejectsGarbage(t *testing.T) {
	bad := []string{
		``, `null`, `[]`, `"x"`, `{}`, `{"task_id":1}`,
		`{"task_id":"t","module_id":"m","status":"paused","submitted_at":1}`,
		`{"task_id":"t","module_id":"m","status":"pending"}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":"soon"}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1e300}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"started_at":-1e20}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"retry_count":-1}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"max_retries":1.5}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"error":3}`,
		`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1`,
	}
	for _, in := range bad {
		var info TaskInfo
		info.TaskID = "kept"
		err := info.UnmarshalJSON([]byte(in))
		assert.Error(t, err, in)
		assert.Equal(t, "kept", info.TaskID, "a failed decode leaves the record alone: %s", in)
	}
}

func TestResultOfCompletedTaskIsACopy(t *testing.T) {
	ctx := testCtx(t)
	m := newManager(t, registry(t, map[string]Module{"a.b": ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return map[string]any{"items": []any{1.0, 2.0}, "n": 2.0}, nil
	})}))
	id, err := m.Submit(ctx, "a.b", nil)
	require.NoError(t, err)
	info, err := m.Wait(ctx, id)
	require.NoError(t, err)
	info.Result.(map[string]any)["n"] = 99.0
	info.Result.(map[string]any)["items"].([]any)[0] = "changed"
	res, err := m.Result(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, map[string]any{"items": []any{1.0, 2.0}, "n": 2.0}, res)
	res.(map[string]any)["n"] = 7.0
	again, err := m.Wait(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 2.0, again.Result.(map[string]any)["n"])
}

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
	f.Add([]byte(`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"run_at":1796292000.123456,"unique_key":"k\u00e9","priority":-100}`))
	f.Add([]byte(`{"task_id":"t","module_id":"m","status":"pending","submitted_at":1,"run_at":-62135596800,"priority":101}`))
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

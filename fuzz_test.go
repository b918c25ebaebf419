package apcore

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"testing"
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

package apcorehttp

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// appendString writes what encoding/json writes, for every kind of
// character: the events are JSON the page parses.
func TestAppendStringIsJSON(t *testing.T) {
	for _, s := range []string{
		"", "plain", `quote " backslash \ slash /`, "tab\tnewline\ncr\rnul\x00bell\x07\x1f",
		"<script>&amp;</script>", "é ü 日本 🎉", "bad \xff\xfe utf-8 \xc3", "line sep \u2028 para \u2029", "\x7f del",
	} {
		want, _ := json.Marshal(s)
		if got := appendString(nil, s); string(got) != string(want) {
			t.Errorf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
}

// An event is a record in the wire format without result and error, and
// stays valid JSON whatever its fields hold.
func TestAppendEvent(t *testing.T) {
	now := time.UnixMicro(time.Now().UnixMicro()).UTC()
	runAt := now.Add(-2 * time.Second)
	info := apcore.TaskInfo{
		TaskID: "id-1", ModuleID: "mod\n<x>", Status: apcore.StatusFailed,
		SubmittedAt: now.Add(-time.Second), StartedAt: now.Add(-time.Second / 2), CompletedAt: now,
		RetryCount: 1, MaxRetries: 2, ErrorCode: apcore.CodeModuleTimeout,
		Progress: 42.5, ProgressMessage: strings.Repeat("é", 1000) + "\x00",
		Result: math.NaN(), Error: "big error",
		RunAt: &runAt, UniqueKey: "key <&>", Priority: -100,
	}
	e := newEvent(&info, true)
	b := appendEvent(nil, &e)
	data, ok := strings.CutPrefix(string(b), "data: ")
	if !ok || !strings.HasSuffix(data, "}\n\n") || strings.Count(data, "\n") != 2 {
		t.Fatalf("not one server-sent event: %q", b)
	}
	var got apcore.TaskInfo
	if err := json.Unmarshal([]byte(data), &got); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	want := info
	want.Result, want.Error, want.UniqueKey = nil, "", ""
	want.ProgressMessage = strings.Repeat("é", maxMessage/2) + "…"
	if got.RunAt == nil || !got.RunAt.Equal(runAt) {
		t.Errorf("event's run_at %v, want %v", got.RunAt, runAt)
	}
	got.RunAt, want.RunAt = nil, nil
	if got != want {
		t.Errorf("event decodes to\n%+v\nwant\n%+v", got, want)
	}
	// Unset, run_at and priority are left out, as MarshalJSON leaves them.
	info.RunAt, info.Priority = nil, 0
	e = newEvent(&info, true)
	if ev := string(appendEvent(nil, &e)); strings.Contains(ev, "run_at") || strings.Contains(ev, "priority") || strings.Contains(ev, "unique_key") {
		t.Errorf("an event without them: %s", ev)
	}
	// JSON has no infinity: such a progress (the core refuses it anyway)
	// is written as 0 rather than breaking the stream.
	info.Progress = math.Inf(1)
	e = newEvent(&info, true)
	if err := json.Unmarshal([]byte(strings.TrimPrefix(string(appendEvent(nil, &e)), "data: ")), &got); err != nil || got.Progress != 0 {
		t.Errorf("infinite progress: %v, progress %v", err, got.Progress)
	}
}

// appendRecord writes a record exactly as TaskInfo.MarshalJSON does, the
// third stage's fields (run_at, unique_key, priority) included when set
// and left out when not; a record whose result does not encode keeps them.
func TestAppendRecordNewFields(t *testing.T) {
	now := time.UnixMicro(time.Now().UnixMicro()).UTC()
	runAt := now.Add(90 * time.Minute)
	for _, info := range []apcore.TaskInfo{
		{TaskID: "a", ModuleID: "m", Status: apcore.StatusPending, SubmittedAt: now},
		{TaskID: "b", ModuleID: "m", Status: apcore.StatusPending, SubmittedAt: now, RunAt: &runAt, UniqueKey: "<b>\"k\"&\u2028", Priority: 100},
		{TaskID: "c", ModuleID: "m", Status: apcore.StatusCompleted, SubmittedAt: now, StartedAt: now, CompletedAt: now, Result: map[string]any{"x": 1}, Priority: -1},
		{TaskID: "d", ModuleID: "m", Status: apcore.StatusPending, SubmittedAt: now, RunAt: &time.Time{}},
	} {
		want, err := info.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecord(nil, &info); string(got) != string(want) {
			t.Errorf("appendRecord = %s\nMarshalJSON  %s", got, want)
		}
		// A result that does not encode: the record, result aside, is
		// what MarshalJSON writes of it.
		bad := info
		bad.Status, bad.Result = apcore.StatusCompleted, math.Inf(1)
		asString := bad
		asString.Result = "+Inf"
		want, err = asString.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if got := appendRecord(nil, &bad); string(got) != string(want) {
			t.Errorf("appendRecord of an infinite result = %s\nwant %s", got, want)
		}
		bad.Result = struct{ V float64 }{math.NaN()}
		var gotFields, wantFields map[string]any
		if err := json.Unmarshal(appendRecord(nil, &bad), &gotFields); err != nil {
			t.Fatal(err)
		}
		bad.Result = nil
		j, _ := bad.MarshalJSON()
		if err := json.Unmarshal(j, &wantFields); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"run_at", "unique_key", "priority"} {
			if gotFields[k] != wantFields[k] {
				t.Errorf("%s: a result that does not encode: %s %v, want %v", info.TaskID, k, gotFields[k], wantFields[k])
			}
		}
	}
}

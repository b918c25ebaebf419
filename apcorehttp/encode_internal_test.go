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
	info := apcore.TaskInfo{
		TaskID: "id-1", ModuleID: "mod\n<x>", Status: apcore.StatusFailed,
		SubmittedAt: now.Add(-time.Second), StartedAt: now.Add(-time.Second / 2), CompletedAt: now,
		RetryCount: 1, MaxRetries: 2, ErrorCode: apcore.CodeModuleTimeout,
		Progress: 42.5, ProgressMessage: strings.Repeat("é", 1000) + "\x00",
		Result: math.NaN(), Error: "big error",
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
	want.Result, want.Error = nil, ""
	want.ProgressMessage = strings.Repeat("é", maxMessage/2) + "…"
	if got != want {
		t.Errorf("event decodes to\n%+v\nwant\n%+v", got, want)
	}
	// JSON has no infinity: such a progress (the core refuses it anyway)
	// is written as 0 rather than breaking the stream.
	info.Progress = math.Inf(1)
	e = newEvent(&info, true)
	if err := json.Unmarshal([]byte(strings.TrimPrefix(string(appendEvent(nil, &e)), "data: ")), &got); err != nil || got.Progress != 0 {
		t.Errorf("infinite progress: %v, progress %v", err, got.Progress)
	}
}

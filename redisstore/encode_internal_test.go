package redisstore

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestEncodeIsJSONMarshal checks that the store writes a record's JSON byte
// for byte as json.Marshal writes it (the format other SDKs read), for
// records whose text needs escaping (HTML-unsafe characters, U+2028, bytes
// that are not UTF-8), with results of every JSON shape, and every optional
// field set or not (the third stage's run_at, unique_key and priority
// among them); and that a record that does not encode fails with
// json.Marshal's error.
func TestEncodeIsJSONMarshal(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: build does no I/O
	defer c.Close()
	s, _, err := build(c)
	require.NoError(t, err)
	at := time.Date(2026, 11, 27, 13, 0, 0, 123456789, time.UTC)
	texts := []string{"", "plain", "a<b", "c>d", "e&f", `<a href="x">&amp;</a>`, "line\u2028sep\u2029", "bad \xff utf-8", "tab\tnew\nline \\ \"q\"", "😀 ünï"}
	results := []any{nil, 1.5, 1e21, 1e-7, "s<>&", true, []any{1.0, "x", nil}, map[string]any{"b": 2.0, "a": map[string]any{"<": "&"}}}
	progress := []float64{0, 33.25, 100, 1e-7, 5e-324, 0.1 + 0.2}
	priorities := []int{0, 1, -1, 100, -100, 37}
	times := []time.Time{{}, at, time.Unix(0, 1000).UTC(), time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC), time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)}
	n := 0
	for _, text := range texts {
		for _, result := range results {
			for _, status := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed} {
				info := apcore.TaskInfo{TaskID: "id-" + text, ModuleID: "mod" + text, Status: status, SubmittedAt: at,
					Result: result, Error: text, RetryCount: n % 3, MaxRetries: n % 5, ProgressMessage: text}
				if n%2 == 0 {
					info.StartedAt, info.CompletedAt = at.Add(time.Second), at.Add(time.Minute)
					info.ErrorCode = apcore.ErrorCode("CODE" + text)
				}
				info.Progress = progress[n%len(progress)]
				info.SubmittedAt = times[n%len(times)]
				if n%3 == 0 {
					info.StartedAt = times[(n/3)%len(times)]
				}
				if n%4 != 0 { // RunAt nil, the zero time, or each time
					at := times[(n/4)%len(times)]
					info.RunAt = &at
				}
				if n%5 != 1 {
					info.UniqueKey = texts[(n/5)%len(texts)]
				}
				info.Priority = priorities[n%len(priorities)]
				want, err := json.Marshal(info)
				require.NoError(t, err)
				got, err := s.encode(&info)
				require.NoError(t, err)
				require.Equal(t, string(want), string(got))
				n++
			}
		}
	}

	// A NaN progress does not encode; the store says so as json.Marshal does.
	nan := apcore.TaskInfo{TaskID: "x", ModuleID: "m", Status: apcore.StatusRunning, Progress: math.NaN()}
	_, want := json.Marshal(&nan)
	require.Error(t, want)
	_, err = s.encode(&nan)
	require.ErrorIs(t, err, apcore.ErrInvalidInput)

	bad := apcore.TaskInfo{TaskID: "x", ModuleID: "m", Status: apcore.StatusCompleted, Result: make(chan int)}
	_, want = json.Marshal(&bad) // as the store encoded it before
	require.Error(t, want)
	_, err = s.encode(&bad)
	require.ErrorIs(t, err, apcore.ErrInvalidInput)
	var ae *apcore.Error
	require.ErrorAs(t, err, &ae)
	require.Equal(t, want.Error(), ae.Cause.Error())

	// appendRecord writes the fields TaskInfo had when it was written; a new
	// one must be added to it (and to the records above).
	var fields []string
	for f := range reflect.TypeFor[apcore.TaskInfo]().Fields() {
		fields = append(fields, f.Name)
	}
	require.Equal(t, []string{"TaskID", "ModuleID", "Status", "SubmittedAt", "StartedAt", "CompletedAt", "Result", "Error",
		"RetryCount", "MaxRetries", "ErrorCode", "Progress", "ProgressMessage", "RunAt", "UniqueKey", "Priority"}, fields,
		"apcore.TaskInfo's fields changed: update appendRecord (record.go) to write what json.Marshal writes")
}

// TestDecodeSpecIsJSONUnmarshal checks that decodeSpec reads every spec as
// json.Unmarshal does: those the store writes (read by its own parser) and
// others (handed to json.Unmarshal), and that it reads the ones the store
// writes without json.Unmarshal.
func TestDecodeSpecIsJSONUnmarshal(t *testing.T) {
	inputs := []json.RawMessage{nil, json.RawMessage(`null`), json.RawMessage(`{}`), json.RawMessage(`{"n":1,"s":"x"}`),
		json.RawMessage(`[1,"a\"]}",{"b":[true,false,null]},-1.5e-7]`), json.RawMessage(`"just a string"`), json.RawMessage(`12`),
		json.RawMessage(`{"<>&":"\u2028é"}`)}
	retries := []apcore.RetryConfig{{}, {MaxRetries: 2, RetryDelay: time.Second, BackoffMultiplier: 2, MaxRetryDelay: time.Minute},
		{MaxRetries: 1, RetryDelay: 1, BackoffMultiplier: 1e-9, MaxRetryDelay: -5}, {BackoffMultiplier: 1e300}}
	traces := []map[string]string{nil, {}, {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
		{"a": "1", "b": "", "": "x"}, {"esc\"aped": "tab\there", "ünï": "😀", "<": "&"}}
	timeouts := []time.Duration{0, 3 * time.Second, -1}
	n := 0
	for _, in := range inputs {
		for _, r := range retries {
			for _, tr := range traces {
				x := spec{Inputs: in, Retry: r, Timeout: timeouts[n%len(timeouts)], Trace: tr}
				n++
				b, err := json.Marshal(x)
				require.NoError(t, err)
				var want, got spec
				require.NoError(t, json.Unmarshal(b, &want))
				require.NoError(t, decodeSpec(b, &got), "%s", b)
				require.Equal(t, want, got, "%s", b)
				if !bytes.ContainsAny(b, "\\") && !strings.ContainsFunc(string(b), func(c rune) bool { return c >= 0x80 }) {
					var fast spec
					require.True(t, fastSpec(b, &fast), "the store's own spec %s is read without json.Unmarshal", b)
				}
			}
		}
	}
	for _, other := range []string{
		`{"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}}`,
		` {"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}} `,
		`{"timeout":5,"retry":{"MaxRetryDelay":4,"MaxRetries":1}}`,
		`{"inputs":{"a":1},"retry":{"MaxRetries":1.5,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}}`,
		`{"inputs":{"a":1},"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4},"trace":{"a":1}}`,
		`{"inputs":{"a":1},"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4},"extra":true}`,
		`{"inputs":{"a":1},"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}`,
		`{"inputs":{"a":1,"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}}`,
		`{"inputs":,"retry":{"MaxRetries":1,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}}`,
		`{}`, `null`, ``, `{"retry":{"MaxRetries":99999999999999999999,"RetryDelay":2,"BackoffMultiplier":3,"MaxRetryDelay":4}}`,
	} {
		var want, got spec
		werr := json.Unmarshal([]byte(other), &want)
		gerr := decodeSpec([]byte(other), &got)
		require.Equal(t, werr == nil, gerr == nil, "%s: json.Unmarshal %v, decodeSpec %v", other, werr, gerr)
		if werr == nil {
			require.Equal(t, want, got, other)
		}
	}
}

package redisstore

import (
	"encoding/json"
	"math"
	"reflect"
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
// field set or not; and that a record that does not encode fails with
// json.Marshal's error.
func TestEncodeIsJSONMarshal(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled: New does no I/O
	defer c.Close()
	s, err := New(c)
	require.NoError(t, err)
	at := time.Date(2026, 11, 27, 13, 0, 0, 123456789, time.UTC)
	texts := []string{"", "plain", "a<b", "c>d", "e&f", `<a href="x">&amp;</a>`, "line\u2028sep\u2029", "bad \xff utf-8", "tab\tnew\nline \\ \"q\"", "😀 ünï"}
	results := []any{nil, 1.5, 1e21, 1e-7, "s<>&", true, []any{1.0, "x", nil}, map[string]any{"b": 2.0, "a": map[string]any{"<": "&"}}}
	progress := []float64{0, 33.25, 100, 1e-7, 5e-324, 0.1 + 0.2}
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
		"RetryCount", "MaxRetries", "ErrorCode", "Progress", "ProgressMessage"}, fields,
		"apcore.TaskInfo's fields changed: update appendRecord (record.go) to write what json.Marshal writes")
}

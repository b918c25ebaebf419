package redisstore

import (
	"encoding/json"
	"math"
	"strconv"
	"time"

	"github.com/apcore-go/apcore"
)

// appendRecord appends the JSON of t to b, byte for byte what json.Marshal
// writes for it (apcore.TaskInfo.MarshalJSON: the protocol's wire format,
// compact and HTML-safe), without reflection for the fields it knows:
// every task write encodes its record, and this was a tenth of the client's
// CPU in the durable benchmark. The result is encoded by encoding/json. ok
// is false when it cannot tell that its bytes would be json.Marshal's (a
// time or progress that json.Marshal refuses); the caller then uses
// json.Marshal. TestEncodeIsJSONMarshal checks it against json.Marshal, and
// fails when TaskInfo gains a field this does not know.
func appendRecord(b []byte, t *apcore.TaskInfo) (_ []byte, ok bool, err error) {
	b = append(b, `{"task_id":`...)
	b = appendString(b, t.TaskID)
	b = append(b, `,"module_id":`...)
	b = appendString(b, t.ModuleID)
	b = append(b, `,"status":`...)
	b = appendString(b, string(t.Status))
	b = append(b, `,"submitted_at":`...)
	if b, ok = appendSeconds(b, t.SubmittedAt); !ok {
		return nil, false, nil
	}
	for _, at := range []struct {
		key string
		t   time.Time
	}{{`,"started_at":`, t.StartedAt}, {`,"completed_at":`, t.CompletedAt}} {
		b = append(b, at.key...)
		if at.t.IsZero() {
			b = append(b, "null"...)
		} else if b, ok = appendSeconds(b, at.t); !ok {
			return nil, false, nil
		}
	}
	b = append(b, `,"result":`...)
	if t.Result == nil {
		b = append(b, "null"...)
	} else {
		r, err := json.Marshal(t.Result)
		if err != nil {
			return nil, false, err
		}
		b = append(b, r...)
	}
	b = append(b, `,"error":`...)
	if t.Error == "" {
		b = append(b, "null"...)
	} else {
		b = appendString(b, t.Error)
	}
	b = append(b, `,"retry_count":`...)
	b = strconv.AppendInt(b, int64(t.RetryCount), 10)
	b = append(b, `,"max_retries":`...)
	b = strconv.AppendInt(b, int64(t.MaxRetries), 10)
	if t.ErrorCode != "" {
		b = append(b, `,"error_code":`...)
		b = appendString(b, string(t.ErrorCode))
	}
	if t.Progress != 0 {
		if math.IsNaN(t.Progress) || math.IsInf(t.Progress, 0) {
			return nil, false, nil
		}
		b = append(b, `,"progress":`...)
		b = appendFloat(b, t.Progress)
	}
	if t.ProgressMessage != "" {
		b = append(b, `,"progress_message":`...)
		b = appendString(b, t.ProgressMessage)
	}
	return append(b, '}'), true, nil
}

// appendSeconds appends t as the wire format writes a time: float Unix
// seconds to the microsecond, 0 for the zero time.
func appendSeconds(b []byte, t time.Time) ([]byte, bool) {
	if t.IsZero() {
		return append(b, '0'), true
	}
	return appendFloat(b, float64(t.UnixMicro())/1e6), true
}

// appendFloat appends f as encoding/json writes a float64.
func appendFloat(b []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b = strconv.AppendFloat(b, f, format, -1, 64)
	if format == 'e' { // e-09 -> e-9, as encoding/json writes it
		if n := len(b); n >= 4 && b[n-4] == 'e' && b[n-3] == '-' && b[n-2] == '0' {
			b[n-2] = b[n-1]
			b = b[:n-1]
		}
	}
	return b
}

// appendString appends s as a JSON string, as encoding/json writes it: a
// string of printable ASCII that needs no escape as it is, any other by
// encoding/json itself.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s) // a string always encodes
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

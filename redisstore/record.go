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
	if t.RunAt != nil && !t.RunAt.IsZero() { // MarshalJSON leaves out a zero RunAt, as it does a nil one
		b = append(b, `,"run_at":`...)
		b, _ = appendSeconds(b, *t.RunAt)
	}
	if t.UniqueKey != "" {
		b = append(b, `,"unique_key":`...)
		b = appendString(b, t.UniqueKey)
	}
	if t.Priority != 0 {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, int64(t.Priority), 10)
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

// decodeRecord decodes a stored record. It calls TaskInfo.UnmarshalJSON
// itself: json.Unmarshal would first check the whole record for valid
// JSON, then call it, and it checks the record again as it decodes it.
func decodeRecord(data []byte, t *apcore.TaskInfo) error { return t.UnmarshalJSON(data) }

// decodeSpec decodes a stored spec (see spec). The spec of a task this
// store inserted has one shape, json.Marshal's of spec; decodeSpec reads
// that shape itself, and hands anything else to json.Unmarshal, which reads
// it as before: a Claim decodes the spec of each task it takes, and
// json.Unmarshal's reflection was most of the client's CPU for it.
func decodeSpec(b []byte, x *spec) error {
	if fastSpec(b, x) {
		return nil
	}
	*x = spec{}
	return json.Unmarshal(b, x)
}

// fastSpec reads a spec of json.Marshal's shape: the inputs (any JSON
// value, compact, as json.Marshal left it) if any, the retry policy's four
// numbers, the timeout if not 0, and the trace if any, with strings free of
// escapes. It reports false, maybe with x half written, for anything else.
func fastSpec(b []byte, x *spec) bool {
	r := specReader{b: b}
	if !r.lit(`{`) {
		return false
	}
	if r.lit(`"inputs":`) {
		start := r.i
		if !r.skipValue() {
			return false
		}
		x.Inputs = json.RawMessage(b[start:r.i])
		if !r.lit(`,`) {
			return false
		}
	}
	var ok bool
	if !r.lit(`"retry":{"MaxRetries":`) {
		return false
	}
	if x.Retry.MaxRetries, ok = r.int(); !ok || !r.lit(`,"RetryDelay":`) {
		return false
	}
	var d int
	if d, ok = r.int(); !ok || !r.lit(`,"BackoffMultiplier":`) {
		return false
	}
	x.Retry.RetryDelay = time.Duration(d)
	if x.Retry.BackoffMultiplier, ok = r.float(); !ok || !r.lit(`,"MaxRetryDelay":`) {
		return false
	}
	if d, ok = r.int(); !ok || !r.lit(`}`) {
		return false
	}
	x.Retry.MaxRetryDelay = time.Duration(d)
	if r.lit(`,"timeout":`) {
		if d, ok = r.int(); !ok {
			return false
		}
		x.Timeout = time.Duration(d)
	}
	if r.lit(`,"trace":{`) {
		x.Trace = map[string]string{}
		for first := true; !r.lit(`}`); first = false {
			if !first && !r.lit(`,`) {
				return false
			}
			k, ok := r.str()
			if !ok || !r.lit(`:`) {
				return false
			}
			v, ok := r.str()
			if !ok {
				return false
			}
			x.Trace[k] = v
		}
	}
	return r.lit(`}`) && r.i == len(b)
}

// specReader reads b from i on.
type specReader struct {
	b []byte
	i int
}

// lit consumes s if b continues with it.
func (r *specReader) lit(s string) bool {
	if len(r.b)-r.i >= len(s) && string(r.b[r.i:r.i+len(s)]) == s {
		r.i += len(s)
		return true
	}
	return false
}

// number consumes the characters a JSON number may hold.
func (r *specReader) number() string {
	start := r.i
	for r.i < len(r.b) {
		c := r.b[r.i]
		if (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
			break
		}
		r.i++
	}
	return string(r.b[start:r.i])
}

// int consumes an integer, as encoding/json reads one into an int.
func (r *specReader) int() (int, bool) {
	n, err := strconv.ParseInt(r.number(), 10, 64)
	return int(n), err == nil
}

// float consumes a number, as encoding/json reads one into a float64.
func (r *specReader) float() (float64, bool) {
	f, err := strconv.ParseFloat(r.number(), 64)
	return f, err == nil
}

// str consumes a string without escapes or control characters.
func (r *specReader) str() (string, bool) {
	if !r.lit(`"`) {
		return "", false
	}
	start := r.i
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			r.i++
			return string(r.b[start : r.i-1]), true
		case c == '\\' || c < 0x20 || c >= 0x80:
			return "", false // json.Unmarshal reads these
		}
		r.i++
	}
	return "", false
}

// skipValue consumes one JSON value of valid, compact JSON.
func (r *specReader) skipValue() bool {
	depth := 0
	for r.i < len(r.b) {
		switch c := r.b[r.i]; c {
		case '"':
			for r.i++; r.i < len(r.b) && r.b[r.i] != '"'; r.i++ {
				if r.b[r.i] == '\\' {
					r.i++
				}
			}
			if r.i >= len(r.b) {
				return false
			}
			r.i++
			if depth == 0 {
				return true
			}
		case '{', '[':
			depth++
			r.i++
		case '}', ']':
			if depth == 0 {
				return false
			}
			depth--
			r.i++
			if depth == 0 {
				return true
			}
		default:
			if depth == 0 { // a number, true, false or null
				start := r.i
				for r.i < len(r.b) && r.b[r.i] != ',' && r.b[r.i] != '}' {
					r.i++
				}
				return r.i > start
			}
			r.i++
		}
	}
	return false
}

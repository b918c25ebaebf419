package apcorehttp

import (
	"encoding/json"
	"math"
	"net/http"
	"reflect"
	"strconv"

	"github.com/apcore-go/apcore"
)

// The API's answers are encoded whole before anything is written, so that
// a value that does not encode yields an error answer, never a 200 with an
// empty body; and a record whose result JSON cannot encode (NaN or an
// infinity, which the memory store keeps) is sent with that result shown
// as well as JSON allows, never blanking the list it is in.

// appendRecord appends info in the wire format. When the result does not
// encode, its non-finite numbers are written as the strings "NaN", "+Inf"
// and "-Inf"; a result that still does not encode is written as null, and
// the record gets a "result_error" field saying why.
func appendRecord(b []byte, info *apcore.TaskInfo) []byte {
	j, err := info.MarshalJSON()
	if err == nil {
		return append(b, j...)
	}
	rec := *info
	if r, ok := finite(info.Result, 0); ok {
		rec.Result = r
		if j, err := rec.MarshalJSON(); err == nil {
			return append(b, j...)
		}
	}
	rec.Result = nil
	j, err2 := rec.MarshalJSON()
	if err2 != nil || len(j) < 2 {
		// Nothing but the result can fail to encode; should anything
		// else, the record is still named.
		b = append(b, `{"task_id":`...)
		b = appendString(b, info.TaskID)
		b = append(b, `,"status":`...)
		b = appendString(b, string(info.Status))
	} else {
		b = append(b, j[:len(j)-1]...)
	}
	b = append(b, `,"result_error":`...)
	b = appendString(b, "the result does not encode as JSON: "+err.Error())
	return append(b, '}')
}

// maxDepth bounds how deeply finite follows a result (the core bounds
// results at 10,000 levels).
const maxDepth = 10_000

// finite returns v with each NaN or infinite number replaced by the string
// "NaN", "+Inf" or "-Inf", maps and slices copied on the way; false when a
// part of v does not encode for another reason.
func finite(v any, depth int) (any, bool) {
	if depth > maxDepth {
		return nil, false
	}
	switch x := v.(type) {
	case nil, string, bool, int, int64, json.Number:
		return v, true
	case float64:
		return finiteFloat(x, v), true
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, ok := finite(e, depth+1)
			if !ok {
				return nil, false
			}
			out[k] = c
		}
		return out, true
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, ok := finite(e, depth+1)
			if !ok {
				return nil, false
			}
			out[i] = c
		}
		return out, true
	}
	if _, err := json.Marshal(v); err == nil {
		return v, true // a part that encodes as it is, Marshalers included
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Float32, reflect.Float64:
		return finiteFloat(rv.Float(), v), true
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return nil, true
		}
		return finite(rv.Elem().Interface(), depth+1)
	case reflect.Map:
		if rv.Type().Key().Kind() != reflect.String {
			return nil, false
		}
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			c, ok := finite(it.Value().Interface(), depth+1)
			if !ok {
				return nil, false
			}
			out[it.Key().String()] = c
		}
		return out, true
	case reflect.Slice, reflect.Array:
		out := make([]any, rv.Len())
		for i := range out {
			c, ok := finite(rv.Index(i).Interface(), depth+1)
			if !ok {
				return nil, false
			}
			out[i] = c
		}
		return out, true
	}
	return nil, false
}

// finiteFloat returns v, or the name of f when f is not finite.
func finiteFloat(f float64, v any) any {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	}
	return v
}

// appendList appends GET /api/tasks's answer: {"tasks": [...]}, with
// "next" when it is not "" and "scanned" when scanned is not negative.
func appendList(b []byte, tasks []apcore.TaskInfo, next string, scanned int) []byte {
	b = append(b, `{"tasks":[`...)
	for i := range tasks {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendRecord(b, &tasks[i])
	}
	b = append(b, ']')
	if next != "" {
		b = append(b, `,"next":`...)
		b = appendString(b, next)
	}
	if scanned >= 0 {
		b = append(b, `,"scanned":`...)
		b = strconv.AppendInt(b, int64(scanned), 10)
	}
	return append(b, "}\n"...)
}

// writeBody answers status with body, JSON.
func writeBody(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeJSON answers status with v encoded; a v that does not encode is a
// 500 with the error, never a 200 with an empty body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		body, _ = json.Marshal(map[string]apiError{"error": {Code: string(apcore.CodeInternalError), Message: "the answer does not encode as JSON: " + err.Error()}})
		status = http.StatusInternalServerError
	}
	writeBody(w, status, append(body, '\n'))
}

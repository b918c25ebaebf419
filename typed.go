package apcore

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Typed modules and results: one conversion, through JSON, between the
// inputs map and a module's own types, on every path a task can take.
//
// A task's inputs reach its module as they were submitted when it runs
// where it was submitted, and JSON-decoded (numbers as float64, structs as
// maps) when it was resumed from a durable store; results come back from
// the memory store as the module returned them and JSON-decoded from the
// others. Typed, InputsOf and ResultAs put everything through the same
// JSON encoding, so that a module and its callers see the same values
// whatever the store and wherever the task ran.

// Typed adapts a function of typed inputs and result to a Module. The
// inputs map is converted to In through JSON, so a field is filled the same
// way whether the task runs where it was submitted or was resumed from a
// durable store (no int/float64 surprise); a conversion failure fails the
// task with GENERAL_INVALID_INPUT naming the field, and is never retried.
//
// Fields of In that the inputs lack keep their zero values, and inputs
// that In has no field for are ignored (encoding/json's rules); whether a
// field is required is the module's rule to check. The result is stored as
// fn returns it; read it with ResultAs to get an Out from any store.
func Typed[In, Out any](fn func(ctx context.Context, in In) (Out, error)) Module {
	return typedModule[In, Out](fn)
}

// typedModule is the Module that Typed returns.
type typedModule[In, Out any] func(ctx context.Context, in In) (Out, error)

// Execute converts inputs to In and calls the function.
func (f typedModule[In, Out]) Execute(ctx context.Context, inputs map[string]any) (any, error) {
	var in In
	if err := convertJSON(inputs, &in, "inputs"); err != nil {
		return nil, Permanent(err)
	}
	out, err := f(ctx, in)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// InputsOf converts a struct (or map) to Submit's inputs through JSON;
// a value JSON cannot encode is GENERAL_INVALID_INPUT, and so is one that
// does not encode as a JSON object (a number, a string, a list). A nil
// value (or one that encodes as null) is nil inputs.
func InputsOf(v any) (map[string]any, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, invalidf("InputsOf: %T does not encode as JSON: %v", v, err)
	}
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil, nil
	}
	if len(b) == 0 || b[0] != '{' {
		return nil, invalidf("InputsOf: %T encodes as JSON %s, not an object; inputs are a map of names to values", v, jsonKind(b))
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, invalidf("InputsOf: %v", err)
	}
	return out, nil
}

// ResultAs converts a completed task's result to T through JSON, whatever
// store kept it; a task that is not completed is TASK_NOT_COMPLETED. A
// result that does not fit T is GENERAL_INVALID_INPUT, naming the field and
// both types.
func ResultAs[T any](info TaskInfo) (T, error) {
	var out T
	if info.Status != StatusCompleted {
		return out, newError(CodeTaskNotCompleted, "Task %s is not completed (status=%s)", info.TaskID, info.Status)
	}
	err := convertJSON(info.Result, &out, "the result of task "+info.TaskID)
	return out, err
}

// convertJSON sets *dst from src through JSON. what names src in errors.
func convertJSON(src any, dst any, what string) error {
	if m, ok := src.(map[string]any); ok && len(m) == 0 {
		src = nil // the zero value, without encoding an empty map
	}
	if src == nil {
		if rv := reflect.ValueOf(dst).Elem(); rv.Kind() == reflect.Map || rv.Kind() == reflect.Struct {
			return nil // null and {} leave a struct or map as it is
		}
	}
	b, err := json.Marshal(src)
	if err != nil {
		return invalidf("%s: not encodable as JSON: %v", what, err)
	}
	if err := json.Unmarshal(b, dst); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			if te.Field == "" {
				return invalidf("%s: a JSON %s cannot be a %s", what, te.Value, te.Type)
			}
			return invalidf("%s: field %q is a JSON %s, want %s", what, te.Field, te.Value, te.Type)
		}
		return invalidf("%s: %v", what, err)
	}
	return nil
}

// jsonKind names the kind of JSON value b starts.
func jsonKind(b []byte) string {
	if len(b) == 0 {
		return "nothing"
	}
	switch b[0] {
	case '[':
		return "array"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	}
	return fmt.Sprintf("number %s", b)
}

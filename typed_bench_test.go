package apcore_test

import (
	"context"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// Run with: go test -run '^$' -bench Typed -benchmem
//
// What Typed's conversion costs over decoding the inputs map by hand, for
// a module of three fields.

type benchIn struct {
	N     int       `json:"n"`
	Name  string    `json:"name"`
	Until time.Time `json:"until"`
}

var benchInputs = map[string]any{"n": 21, "name": "batch-7", "until": "2026-12-03T10:00:00Z"}

func BenchmarkTypedInputs(b *testing.B) {
	ctx := context.Background()
	b.Run("by-hand", func(b *testing.B) {
		b.ReportAllocs()
		mod := apcore.ModuleFunc(func(_ context.Context, in map[string]any) (any, error) {
			var v benchIn
			switch n := in["n"].(type) { // an int here, a float64 when resumed
			case int:
				v.N = n
			case float64:
				v.N = int(n)
			}
			v.Name, _ = in["name"].(string)
			if s, ok := in["until"].(string); ok {
				t, err := time.Parse(time.RFC3339, s)
				if err != nil {
					return nil, err
				}
				v.Until = t
			}
			return v.N * 2, nil
		})
		for b.Loop() {
			if _, err := mod.Execute(ctx, benchInputs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Typed", func(b *testing.B) {
		b.ReportAllocs()
		mod := apcore.Typed(func(_ context.Context, in benchIn) (int, error) { return in.N * 2, nil })
		for b.Loop() {
			if _, err := mod.Execute(ctx, benchInputs); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ResultAs", func(b *testing.B) {
		b.ReportAllocs()
		info := apcore.TaskInfo{Status: apcore.StatusCompleted, Result: map[string]any{"n": 42.0, "name": "x", "until": "2026-12-03T10:00:00Z"}}
		for b.Loop() {
			if _, err := apcore.ResultAs[benchIn](info); err != nil {
				b.Fatal(err)
			}
		}
	})
}

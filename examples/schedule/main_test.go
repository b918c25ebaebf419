package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// The example shows each feature and fails if one does not hold (a
// duplicate submit that made a second task, a tick that ran twice).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var out strings.Builder
	if err := run(ctx, &out, 2); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"pending, due",
		"the second Submit returned the first task's id: true",
		"  ran urgent\n  ran routine 1\n  ran routine 2\n",
		"made one task, key schedule:demo.heartbeat:",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The example runs: the committed order is confirmed by its task, and the
// rolled-back one leaves neither its row nor its task.
func TestRun(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), &out, filepath.Join(t.TempDir(), "shop.db")); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		`order 1 \(book\) and task \w+ committed together`,
		`task \w+: completed \(order 1 confirmed\), ran \S+ after it was submitted; order 1 is confirmed`,
		`order 2 \(lamp\) and task \w+ rolled back: payment declined`,
		`order rows with id 2: 0; task \w+: not found; active tasks: 0`,
	} {
		if !regexp.MustCompile(want).MatchString(out.String()) {
			t.Errorf("the output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}

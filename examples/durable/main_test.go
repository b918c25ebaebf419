package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A second run lists the tasks of the first: the records survived.
func TestSecondRunSeesTheFirst(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	var first, second bytes.Buffer
	if err := run(context.Background(), &first, path); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.String(), "holds no tasks yet") {
		t.Fatalf("first run:\n%s", first.String())
	}
	if err := run(context.Background(), &second, path); err != nil {
		t.Fatal(err)
	}
	out := second.String()
	if !strings.Contains(out, "3 tasks from earlier runs") {
		t.Fatalf("second run does not list the first run's tasks:\n%s", out)
	}
	earlier := out[:strings.Index(out, "this run's tasks")]
	for _, want := range []string{"report.build", "completed", "report.send", "failed", "mail server refused the address"} {
		if !strings.Contains(earlier, want) {
			t.Errorf("the earlier tasks lack %q:\n%s", want, earlier)
		}
	}
}

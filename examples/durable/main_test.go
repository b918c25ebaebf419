package main

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A second run lists the tasks of the first: the records survived, in the
// folder the run was given.
func TestSecondRunSeesTheFirst(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "not-yet-made")
	var first, second bytes.Buffer
	if err := run(context.Background(), &first, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.String(), "holds no tasks yet") || !strings.Contains(first.String(), "kept in "+dbPath(dir)) {
		t.Fatalf("first run:\n%s", first.String())
	}
	if _, err := os.Stat(dbPath(dir)); err != nil {
		t.Fatalf("the first run left no file in its folder: %v", err)
	}
	if err := run(context.Background(), &second, dir); err != nil {
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

// Tasks a crashed run left active are failed on the next run.
func TestCrashedRunIsCleanedUp(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+dbPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	// What a process killed mid-task leaves behind.
	if err := store.Save(ctx, apcore.TaskInfo{TaskID: "killed-0000", ModuleID: "report.build", Status: apcore.StatusRunning,
		SubmittedAt: time.Now(), StartedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	var out bytes.Buffer
	if err := run(ctx, &out, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "1 tasks of a run that stopped early") || !strings.Contains(out.String(), "abandoned") {
		t.Fatalf("the killed task was not failed:\n%s", out.String())
	}
}

// The default folder is the example's own, never a file shared with others.
func TestDefaultDirIsItsOwn(t *testing.T) {
	if got := filepath.Base(defaultDir()); got != "apcore-durable" {
		t.Fatalf("defaultDir() = %q", defaultDir())
	}
}

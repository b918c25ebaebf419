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

// Tasks a killed run left running are ended by the next run's manager,
// with no clean-up of the example's own: failed TASK_ABANDONED when it
// recovers them (the killed run's lease has ended), or cancelled when it
// shuts down. The run after lists them so.
func TestKilledRunIsCleanedUp(t *testing.T) {
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
	// What a process killed mid-task leaves behind: its task held under its
	// lease, and the lease, which has ended since.
	if _, err := store.Renew(ctx, apcore.LeaseRequest{Owner: "killed-run", Expires: time.Now().Add(-time.Minute), Create: true}); err != nil {
		t.Fatal(err)
	}
	killed := apcore.TaskInfo{TaskID: "killed-0000", ModuleID: "report.build", Status: apcore.StatusRunning,
		SubmittedAt: time.Now(), StartedAt: time.Now()}
	if ok, err := store.Insert(ctx, apcore.StoredTask{Info: killed, Owner: "killed-run"}, 1000); err != nil || !ok {
		t.Fatalf("Insert: %v, %v", ok, err)
	}
	store.Close()
	db.Close()

	var first, second bytes.Buffer
	if err := run(ctx, &first, dir); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(first.String(), "killed-0") {
		t.Fatalf("the first run does not list the killed run's task:\n%s", first.String())
	}
	if err := run(ctx, &second, dir); err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(second.String(), "\n") {
		if strings.Contains(l, "killed-0") {
			line = l
		}
	}
	if !strings.Contains(line, "failed") && !strings.Contains(line, "cancelled") {
		t.Fatalf("the killed run's task is still active after a run:\n%s", second.String())
	}
	t.Logf("the killed run's task, on the run after: %s", strings.TrimSpace(line))
}

// The default folder is the example's own, never a file shared with others.
func TestDefaultDirIsItsOwn(t *testing.T) {
	if got := filepath.Base(defaultDir()); got != "apcore-durable" {
		t.Fatalf("defaultDir() = %q", defaultDir())
	}
}

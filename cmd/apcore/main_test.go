package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// binary is the apcore command, built by TestMain.
var binary string

// TestMain builds the command once (with -race when the tests run with
// it), runs the tests against that binary, and checks for leaked
// goroutines.
func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "apcore-cmd-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "apcore")
	args := []string{"build", "-o", binary}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

// result is what a run of the command did.
type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

// apcoreRun runs the command with args, APCORE_STORE set to store (unset
// when ""), and returns what it did; it fails the test if the command runs
// for a minute.
func apcoreRun(t *testing.T, store string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "APCORE_STORE=") || strings.HasPrefix(kv, "GORACE=")
	})
	// A binary built with -race sleeps a second on a clean exit, for
	// reports from goroutines still running, unless told not to; a race it
	// finds still makes it exit 66.
	env = append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	if store != "" {
		env = append(env, "APCORE_STORE="+store)
	}
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("apcore %s: %v", strings.Join(args, " "), err)
	}
	require.NoError(t, ctx.Err(), "apcore %s ran for a minute", strings.Join(args, " "))
	return r
}

// ok runs the command and requires exit code 0 and nothing on stderr.
func ok(t *testing.T, args ...string) string {
	t.Helper()
	r := apcoreRun(t, "", args...)
	require.Equal(t, 0, r.code, "apcore %s: %s", strings.Join(args, " "), r.stderr)
	require.Empty(t, r.stderr, "apcore %s", strings.Join(args, " "))
	return r.stdout
}

// requireFailure checks a failed run: the code, one line on stderr that
// names no panic and shows no usage text, nothing on stdout.
func requireFailure(t *testing.T, r result, code int, contains string) {
	t.Helper()
	require.Equal(t, code, r.code, "stdout %q stderr %q", r.stdout, r.stderr)
	assert.Empty(t, r.stdout)
	require.True(t, strings.HasPrefix(r.stderr, "apcore: "), "stderr: %q", r.stderr)
	assert.Equal(t, 1, strings.Count(r.stderr, "\n"), "one line on stderr: %q", r.stderr)
	assert.True(t, strings.HasSuffix(r.stderr, "\n"), "stderr: %q", r.stderr)
	assert.NotContains(t, r.stderr, "goroutine ")
	assert.NotContains(t, r.stderr, "panic")
	assert.NotContains(t, r.stderr, "Usage:")
	assert.Contains(t, r.stderr, contains)
}

// backend is a store for a test: the store the test's managers use, and
// the command-line flags that name the same store.
type backend struct {
	name  string
	store apcore.SharedStore
	flags []string
}

var seq atomic.Int64

// backends returns a fresh SQLite file, PostgreSQL schema and table, and
// Redis prefix. Without the servers the test fails: these tests are about
// the real stores (scripts/test.sh starts them).
func backends(t *testing.T) []backend {
	return []backend{sqliteBackend(t), postgresBackend(t), redisBackend(t)}
}

func sqliteBackend(t *testing.T) backend {
	path := filepath.Join(t.TempDir(), "tasks.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)")
	require.NoError(t, err)
	db.SetMaxIdleConns(8)
	t.Cleanup(func() { db.Close() })
	s, err := sqlstore.New(context.Background(), db, sqlstore.SQLite)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return backend{"SQLite", s, []string{"--store", "sqlite:" + path}}
}

func postgresBackend(t *testing.T) backend {
	dsn := freshSchema(t)
	db, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	db.SetMaxIdleConns(8)
	t.Cleanup(func() { db.Close() })
	// A table name of its own, to try --table.
	s, err := sqlstore.New(context.Background(), db, sqlstore.PostgreSQL, sqlstore.WithTable("cli_tasks"))
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return backend{"PostgreSQL", s, []string{"--store", dsn, "--table", "cli_tasks"}}
}

// freshSchema returns the URL of the PostgreSQL test server with a schema
// of its own as the search path; the schema is dropped at the end with
// whatever was made in it.
func freshSchema(t *testing.T) string {
	dsn := os.Getenv("APCORE_TEST_POSTGRES")
	if dsn == "" {
		t.Fatal("APCORE_TEST_POSTGRES is not set: run ./scripts/test.sh, which starts a PostgreSQL server, or point it at one")
	}
	admin, err := sql.Open("pgx", dsn)
	require.NoError(t, err)
	t.Cleanup(func() { admin.Close() })
	require.NoError(t, admin.PingContext(context.Background()), "the PostgreSQL test server is not reachable")
	schema := fmt.Sprintf("apcore_cmd_%d_%d", os.Getpid(), seq.Add(1))
	_, err = admin.Exec("CREATE SCHEMA " + schema)
	require.NoError(t, err)
	t.Cleanup(func() { _, _ = admin.Exec("DROP SCHEMA " + schema + " CASCADE") })
	u, err := url.Parse(dsn)
	require.NoError(t, err)
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

func redisBackend(t *testing.T) backend {
	raw := os.Getenv("APCORE_TEST_REDIS")
	if raw == "" {
		t.Fatal("APCORE_TEST_REDIS is not set: run ./scripts/test.sh, which starts a Redis server, or point it at one")
	}
	opts, err := redis.ParseURL(raw)
	require.NoError(t, err)
	c := redis.NewClient(opts)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, c.Ping(context.Background()).Err(), "the Redis test server is not reachable")
	prefix := fmt.Sprintf("apcore-cmd-test:%d:%d:", os.Getpid(), seq.Add(1))
	t.Cleanup(func() {
		keys, _ := c.Keys(context.Background(), prefix+"*").Result()
		if len(keys) > 0 {
			c.Del(context.Background(), keys...)
		}
	})
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	return backend{"Redis", s, []string{"--store", raw, "--prefix", prefix}}
}

// listJSON is tasks list --json's output.
type listJSON struct {
	Tasks   []apcore.TaskInfo `json:"tasks"`
	Next    *string           `json:"next"`
	Scanned *int              `json:"scanned"`
}

func decode[T any](t *testing.T, out string) T {
	t.Helper()
	var v T
	require.NoError(t, json.Unmarshal([]byte(out), &v), "%s", out)
	return v
}

func ids(tasks []apcore.TaskInfo) []string {
	out := make([]string, len(tasks))
	for i := range tasks {
		out[i] = tasks[i].TaskID
	}
	return out
}

// TestEndToEnd runs the command against each store while a manager in
// this process uses it: it lists, shows and counts the manager's tasks,
// and cancels one running there, whose module's context ends.
func TestEndToEnd(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) { endToEnd(t, b) })
	}
}

func endToEnd(t *testing.T, b backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	reg := apcore.NewRegistry()
	require.NoError(t, reg.Register("cli.quick", apcore.ModuleFunc(func(_ context.Context, in map[string]any) (any, error) {
		return map[string]any{"n": in["n"]}, nil
	})))
	require.NoError(t, reg.Register("cli.fail", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, apcore.Permanent(errors.New("boom"))
	})))
	started, stopped := make(chan string, 4), make(chan string, 4)
	require.NoError(t, reg.Register("cli.block", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		info, _ := apcore.TaskFromContext(ctx)
		started <- info.TaskID
		<-ctx.Done()
		stopped <- info.TaskID
		return nil, ctx.Err()
	})))
	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(b.store), apcore.WithMaxConcurrent(1))
	require.NoError(t, err)
	defer func() { assert.NoError(t, mgr.Shutdown(context.Background())) }()

	var quick []string
	for n := 1; n <= 3; n++ {
		id, err := mgr.Submit(ctx, "cli.quick", map[string]any{"n": n})
		require.NoError(t, err)
		info, err := mgr.Wait(ctx, id)
		require.NoError(t, err)
		require.Equal(t, apcore.StatusCompleted, info.Status)
		quick = append(quick, id)
	}
	failed, err := mgr.Submit(ctx, "cli.fail", nil)
	require.NoError(t, err)
	info, err := mgr.Wait(ctx, failed)
	require.NoError(t, err)
	require.Equal(t, apcore.StatusFailed, info.Status)
	running, err := mgr.Submit(ctx, "cli.block", nil)
	require.NoError(t, err)
	require.Equal(t, running, <-started)
	pending, err := mgr.Submit(ctx, "cli.block", nil) // waits for the one slot
	require.NoError(t, err)
	all := append(slices.Clone(quick), failed, running, pending)
	f := b.flags

	t.Run("list", func(t *testing.T) {
		page := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json"}, f...)...))
		assert.Equal(t, all, ids(page.Tasks))
		assert.Nil(t, page.Next, "the last page has no next")
		assert.Nil(t, page.Scanned)
		byID := map[string]apcore.TaskInfo{}
		for _, task := range page.Tasks {
			byID[task.TaskID] = task
		}
		assert.Equal(t, apcore.StatusRunning, byID[running].Status)
		assert.Equal(t, apcore.StatusPending, byID[pending].Status)
		assert.Equal(t, "boom", byID[failed].Error)

		first := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--limit", "4"}, f...)...))
		assert.Equal(t, all[:4], ids(first.Tasks))
		require.NotNil(t, first.Next)
		rest := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--limit", "4", "--after", *first.Next}, f...)...))
		assert.Equal(t, all[4:], ids(rest.Tasks))
		assert.Nil(t, rest.Next)

		done := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--status", "completed"}, f...)...))
		assert.Equal(t, quick, ids(done.Tasks))
		newest := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--newest", "--limit", "2"}, f...)...))
		assert.Equal(t, []string{pending, running}, ids(newest.Tasks))

		// --module: read a page, keep the matching records.
		blocks := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--module", "cli.block"}, f...)...))
		assert.Equal(t, []string{running, pending}, ids(blocks.Tasks))
		require.NotNil(t, blocks.Scanned)
		assert.Equal(t, 6, *blocks.Scanned)
		// Full mid-page: the cursor carries on right after the last one kept.
		two := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--module", "cli.quick", "--limit", "2"}, f...)...))
		assert.Equal(t, quick[:2], ids(two.Tasks))
		require.NotNil(t, two.Next)
		three := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--module", "cli.quick", "--after", *two.Next}, f...)...))
		assert.Equal(t, quick[2:], ids(three.Tasks))
		assert.Nil(t, three.Next)
		// The scan's bound: nothing found in 3 records, and a cursor.
		none := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--module", "cli.block", "--scan", "3"}, f...)...))
		assert.Empty(t, none.Tasks)
		require.NotNil(t, none.Next)
		assert.Equal(t, 3, *none.Scanned)
		later := decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json", "--module", "cli.block", "--scan", "3", "--after", *none.Next}, f...)...))
		assert.Equal(t, []string{running, pending}, ids(later.Tasks))

		table := ok(t, append([]string{"tasks", "list"}, f...)...)
		assert.Contains(t, table, "TASK ID")
		for _, id := range all {
			assert.Contains(t, table, id)
		}
		assert.Contains(t, table, "boom")
		assert.Equal(t, len(all)+1, strings.Count(table, "\n"), "%s", table)
		paged := ok(t, append([]string{"tasks", "list", "--limit", "1"}, f...)...)
		assert.Contains(t, paged, "next page: --after ")
	})

	t.Run("show", func(t *testing.T) {
		// Flags before the id, and the store from the environment.
		want, err := b.store.Get(ctx, quick[0])
		require.NoError(t, err)
		got := decode[apcore.TaskInfo](t, ok(t, append(append([]string{"tasks", "show"}, f...), "--json", quick[0])...))
		assert.Equal(t, want.TaskID, got.TaskID)
		assert.Equal(t, "cli.quick", got.ModuleID)
		assert.Equal(t, apcore.StatusCompleted, got.Status)
		assert.Equal(t, map[string]any{"n": float64(1)}, got.Result)
		assert.True(t, want.SubmittedAt.Equal(got.SubmittedAt))
		wire, err := json.Marshal(want)
		require.NoError(t, err)
		assert.JSONEq(t, string(wire), ok(t, append([]string{"tasks", "show", "--json", quick[0]}, f...)...), "the wire format")

		r := apcoreRun(t, f[1], append([]string{"tasks", "show", failed}, f[2:]...)...)
		require.Equal(t, 0, r.code, r.stderr)
		assert.Contains(t, r.stdout, "failed")
		assert.Contains(t, r.stdout, "boom")
		assert.Contains(t, ok(t, append([]string{"tasks", "show", quick[1]}, f...)...), `{"n":2}`)

		requireFailure(t, apcoreRun(t, "", append([]string{"tasks", "show", "no-such-task"}, f...)...), 1, "no task no-such-task")
	})

	t.Run("stats", func(t *testing.T) {
		type statsJSON struct {
			Counts        map[string]int `json:"counts"`
			OldestPending *struct {
				Task       apcore.TaskInfo `json:"task"`
				AgeSeconds float64         `json:"age_seconds"`
			} `json:"oldest_pending"`
			Modules    map[string]map[string]int `json:"modules"`
			Scanned    int                       `json:"scanned"`
			ScannedAll bool                      `json:"scanned_all"`
		}
		st := decode[statsJSON](t, ok(t, append([]string{"stats", "--json"}, f...)...))
		assert.Equal(t, map[string]int{"pending": 1, "running": 1, "completed": 3, "failed": 1, "cancelled": 0, "total": 6}, st.Counts)
		require.NotNil(t, st.OldestPending)
		assert.Equal(t, pending, st.OldestPending.Task.TaskID)
		assert.GreaterOrEqual(t, st.OldestPending.AgeSeconds, 0.0)
		assert.Less(t, st.OldestPending.AgeSeconds, 120.0)
		assert.Equal(t, map[string]map[string]int{
			"cli.quick": {"completed": 3, "total": 3},
			"cli.fail":  {"failed": 1, "total": 1},
			"cli.block": {"running": 1, "pending": 1, "total": 2},
		}, st.Modules)
		assert.Equal(t, 6, st.Scanned)
		assert.True(t, st.ScannedAll)

		bounded := decode[statsJSON](t, ok(t, append([]string{"stats", "--json", "--scan", "2"}, f...)...))
		assert.Equal(t, map[string]map[string]int{"cli.block": {"running": 1, "pending": 1, "total": 2}}, bounded.Modules, "the newest records")
		assert.False(t, bounded.ScannedAll)

		table := ok(t, append([]string{"stats"}, f...)...)
		assert.Contains(t, table, "completed  3")
		assert.Contains(t, table, pending)
		assert.Contains(t, table, "cli.quick")
	})

	t.Run("cancel", func(t *testing.T) {
		out := decode[struct {
			Cancelled bool            `json:"cancelled"`
			Task      apcore.TaskInfo `json:"task"`
		}](t, ok(t, append([]string{"tasks", "cancel", "--json", running}, f...)...))
		assert.True(t, out.Cancelled)
		assert.Equal(t, apcore.StatusCancelled, out.Task.Status)
		// The module's context ends on the manager that runs it.
		select {
		case id := <-stopped:
			assert.Equal(t, running, id)
		case <-time.After(10 * time.Second):
			t.Fatal("the module's context was not cancelled within 10 s of the command's cancel")
		}
		info, err := mgr.Wait(ctx, running)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCancelled, info.Status)
		// Nothing else changed: the pending one now runs in the freed slot.
		select {
		case id := <-started:
			assert.Equal(t, pending, id)
		case <-time.After(10 * time.Second):
			t.Fatal("the pending task did not start in the freed slot")
		}
		for _, id := range quick {
			got, err := b.store.Get(ctx, id)
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusCompleted, got.Status)
		}
		got, err := mgr.Status(ctx, pending)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusRunning, got.Status)

		again := ok(t, append([]string{"tasks", "cancel", running}, f...)...)
		assert.Contains(t, again, "already cancelled")
		done := ok(t, append([]string{"tasks", "cancel", quick[0]}, f...)...)
		assert.Contains(t, done, "already completed")
		got, err = b.store.Get(ctx, quick[0])
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCompleted, got.Status)
		requireFailure(t, apcoreRun(t, "", append([]string{"tasks", "cancel", "no-such-task"}, f...)...), 1, "no task no-such-task")
	})

	t.Run("migrate", func(t *testing.T) {
		out := ok(t, append([]string{"migrate"}, f...)...)
		if b.name == "Redis" {
			assert.Contains(t, out, fmt.Sprintf("nothing to migrate (layout version %d)", redisstore.DefaultLayout))
		} else {
			assert.Contains(t, out, "schema up to date")
		}
		// The records are still there.
		assert.Len(t, decode[listJSON](t, ok(t, append([]string{"tasks", "list", "--json"}, f...)...)).Tasks, 6)
	})
}

// TestMigrate: a SQL store whose table is missing is refused by every
// command but migrate, which makes it (twice is fine); the refusal changes
// nothing.
func TestMigrate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "empty.db")
	require.NoError(t, os.WriteFile(path, nil, 0o644)) // an empty SQLite database
	for _, c := range []struct {
		name  string
		flags []string
	}{
		{"SQLite", []string{"--store", "sqlite:" + path}},
		{"PostgreSQL", []string{"--store", freshSchema(t), "--table", "ops_tasks"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, cmd := range [][]string{{"tasks", "list"}, {"tasks", "show", "x"}, {"tasks", "cancel", "x"}, {"stats"}} {
				requireFailure(t, apcoreRun(t, "", append(cmd, c.flags...)...), 1, "needs apcore migrate first")
			}
			if c.name == "SQLite" {
				fi, err := os.Stat(path)
				require.NoError(t, err)
				assert.Zero(t, fi.Size(), "the refused commands made no table")
			}
			out := decode[map[string]any](t, ok(t, append([]string{"migrate", "--json"}, c.flags...)...))
			assert.Equal(t, true, out["migrated"])
			assert.Contains(t, ok(t, append([]string{"migrate"}, c.flags...)...), "schema up to date")
			assert.Contains(t, ok(t, append([]string{"tasks", "list"}, c.flags...)...), "no tasks")
		})
	}
}

// TestCancelTouchesNothingElse cancels one task of a store whose other
// active records no live manager holds: one held by an owner whose lease is
// gone, one resumable task waiting for any manager. A TaskManager made to
// send the cancel would recover the first (failed TASK_ABANDONED) and, on
// Shutdown, cancel both (they are orphans); the command changes the one
// task it was asked to cancel, and nothing else.
func TestCancelTouchesNothingElse(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			now := time.UnixMicro(time.Now().UnixMicro()).UTC()
			record := func(id string, status apcore.TaskStatus) apcore.TaskInfo {
				info := apcore.TaskInfo{TaskID: id, ModuleID: "cli.gone", Status: status, SubmittedAt: now, MaxRetries: 3}
				if status == apcore.StatusRunning {
					info.StartedAt = now
				}
				return info
			}
			target, held, waiting := uuid.NewString(), uuid.NewString(), uuid.NewString()
			for _, st := range []apcore.StoredTask{
				{Info: record(target, apcore.StatusRunning), Owner: "owner-gone-1"},
				{Info: record(held, apcore.StatusRunning), Owner: "owner-gone-2"},
				{Info: record(waiting, apcore.StatusPending), Resumable: true, Inputs: json.RawMessage(`{}`)},
			} {
				inserted, err := b.store.Insert(ctx, st, 100)
				require.NoError(t, err)
				require.True(t, inserted)
			}
			// The lease of owner-gone-2 ended a minute ago.
			_, err := b.store.Renew(ctx, apcore.LeaseRequest{Owner: "owner-gone-2", Expires: now.Add(-time.Minute), Create: true})
			require.NoError(t, err)

			out := ok(t, append([]string{"tasks", "cancel", target}, b.flags...)...)
			assert.Contains(t, out, "cancelled")
			got, err := b.store.Get(ctx, target)
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusCancelled, got.Status)
			for id, want := range map[string]apcore.TaskStatus{held: apcore.StatusRunning, waiting: apcore.StatusPending} {
				got, err := b.store.Get(ctx, id)
				require.NoError(t, err)
				assert.Equal(t, want, got.Status, "a task the command was not asked to cancel")
				assert.Empty(t, got.ErrorCode)
			}
			// They are still what no live manager holds, as before.
			orphans, err := b.store.Orphans(ctx, apcore.OrphanQuery{Now: time.Now()})
			require.NoError(t, err)
			assert.ElementsMatch(t, []string{held, waiting}, ids(orphans))
		})
	}
}

// TestErrors checks the command line's mistakes (exit code 2) and the
// store's failures (exit code 1): one line on stderr, no usage text, no
// stack trace, within --timeout when the store does not answer.
func TestErrors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tasks.db")
	ok(t, "migrate", "--store", "sqlite:"+path)
	store := "sqlite:" + path
	for _, c := range []struct {
		name     string
		args     []string
		contains string
	}{
		{"no store", []string{"tasks", "list"}, "no store"},
		{"no command", nil, "name a command"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
		{"unknown subcommand", []string{"tasks", "frobnicate"}, `unknown command "frobnicate"`},
		{"tasks alone", []string{"tasks"}, "name a subcommand"},
		{"unknown flag", []string{"tasks", "list", "--store", store, "--frobnicate"}, "unknown flag: --frobnicate"},
		{"no id", []string{"tasks", "show", "--store", store}, "needs a task id"},
		{"two ids", []string{"tasks", "cancel", "--store", store, "a", "b"}, "takes one task id"},
		{"bad status", []string{"tasks", "list", "--store", store, "--status", "done"}, `--status "done"`},
		{"bad limit", []string{"tasks", "list", "--store", store, "--limit", "5000"}, "--limit must be from 1 to 1000"},
		{"limit not a number", []string{"tasks", "list", "--store", store, "--limit", "many"}, "--limit"},
		{"bad timeout", []string{"tasks", "list", "--store", store, "--timeout", "0s"}, "--timeout must be positive"},
		{"unknown kind of store", []string{"tasks", "list", "--store", "mysql://db/x"}, `unknown kind of store "mysql"`},
		{"not a URL", []string{"tasks", "list", "--store", "tasks.db"}, "not a store URL"},
		{"sqlite without a path", []string{"tasks", "list", "--store", "sqlite:"}, "needs the database file's path"},
		{"postgres without a host", []string{"tasks", "list", "--store", "postgres:///db"}, "names no host"},
		{"bad redis URL", []string{"tasks", "list", "--store", "redis://h/notadb"}, "invalid database number"},
		{"table for redis", []string{"tasks", "list", "--store", "redis://127.0.0.1:1", "--table", "t"}, "--table is for SQLite and PostgreSQL"},
		{"bad table", []string{"tasks", "list", "--store", store, "--table", "tasks;drop"}, `--table "tasks;drop"`},
		{"prefix for sqlite", []string{"tasks", "list", "--store", store, "--prefix", "p:"}, "--prefix is for Redis"},
	} {
		t.Run(c.name, func(t *testing.T) {
			requireFailure(t, apcoreRun(t, "", c.args...), 2, c.contains)
		})
	}

	t.Run("help", func(t *testing.T) {
		out := ok(t, "tasks", "list", "--help")
		assert.Contains(t, out, "Usage:")
		assert.Contains(t, out, "--scan")
	})
	t.Run("no sqlite file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.db")
		requireFailure(t, apcoreRun(t, "", "tasks", "list", "--store", "sqlite:"+missing), 1, "no database file")
		_, err := os.Stat(missing)
		assert.ErrorIs(t, err, os.ErrNotExist, "a listing creates no file")
	})
	t.Run("unknown id", func(t *testing.T) {
		requireFailure(t, apcoreRun(t, store, "tasks", "show", "nope"), 1, "no task nope")
	})

	// A server that accepts connections and never answers: the command
	// gives up after --timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	defer func() {
		silent.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	}()
	// A port with nothing listening: connection refused at once.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := closed.Addr().String()
	closed.Close()
	for _, c := range []struct {
		name, url, contains string
	}{
		{"postgres silent", "postgres://u:hunter2@" + silent.Addr().String() + "/db?sslmode=disable", "--timeout 1s"},
		{"redis silent", "redis://:hunter2@" + silent.Addr().String() + "/0", "--timeout 1s"},
		{"postgres refused", "postgres://u:hunter2@" + refused + "/db?sslmode=disable", "does not answer"},
		{"redis refused", "redis://:hunter2@" + refused + "/0", "does not answer"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := apcoreRun(t, "", "stats", "--store", c.url, "--timeout", "1s")
			requireFailure(t, r, 1, c.contains)
			assert.NotContains(t, r.stderr, "hunter2", "the password")
			assert.Less(t, r.took, 4*time.Second, "bounded by --timeout (1s)")
		})
	}
}

func TestOneLine(t *testing.T) {
	assert.Equal(t, "a b", oneLine(" a b \n"))
	assert.Equal(t, "failed to connect: x: refused; y", oneLine("failed to connect:\n\tx:  refused\n\n y\r\n"))
}

func TestCell(t *testing.T) {
	assert.Equal(t, "a b c\uFFFD[31m", cell("a\tb\nc\x1b[31m"))
	assert.Equal(t, "abc…", short("abcdef", 4))
	assert.Equal(t, `"a b"`, quoteID("a b"))
	assert.Equal(t, "0f2c-x", quoteID("0f2c-x"))
}

func TestSQLiteDSN(t *testing.T) {
	assert.Equal(t, "file:/tmp/a%3fb%23c%25d.db?_pragma=busy_timeout(5000)", sqliteDSN("/tmp/a?b#c%d.db"))
	// A file name with those characters works.
	path := filepath.Join(t.TempDir(), "odd ?#% name.db")
	ok(t, "migrate", "--store", "sqlite:"+path)
	_, err := os.Stat(path)
	require.NoError(t, err)
	assert.Contains(t, ok(t, "tasks", "list", "--store", "sqlite:"+path), "no tasks")
}

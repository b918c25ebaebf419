package processtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/processtest/internal/ptstore"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// worker is the path of the ptworker binary that TestMain builds.
var worker string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ptworker")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	worker = filepath.Join(dir, "ptworker")
	build := exec.Command("go", "build", "-o", worker, "./ptworker")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ptworker:", err)
		os.Exit(2)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

var tableSeq atomic.Int64

// stores returns the store specs a test runs against: a SQLite file, a
// PostgreSQL table and a Redis prefix, each fresh. PostgreSQL and Redis
// come from the servers scripts/test.sh starts; without them the test
// fails.
func stores(t *testing.T) map[string]string {
	t.Helper()
	pg, rd := os.Getenv("APCORE_TEST_POSTGRES"), os.Getenv("APCORE_TEST_REDIS")
	if pg == "" || rd == "" {
		t.Fatal("APCORE_TEST_POSTGRES and APCORE_TEST_REDIS are not set: run ./scripts/test.sh, which starts the servers")
	}
	n := tableSeq.Add(1)
	return map[string]string{
		"SQLite":     "sqlite:" + filepath.Join(t.TempDir(), "tasks.db"),
		"PostgreSQL": fmt.Sprintf("postgres:%s#pt_%d_%d", pg, os.Getpid(), n),
		"Redis":      fmt.Sprintf("redis:%s#pt:%d:%d:", rd, os.Getpid(), n),
	}
}

// open opens spec in this process.
func open(t *testing.T, spec string) apcore.SharedStore {
	t.Helper()
	s, closeStore, err := ptstore.Open(context.Background(), spec)
	require.NoError(t, err)
	t.Cleanup(closeStore)
	return s
}

// manager is this process's manager over store, shut down at the end. Its
// pt.work module sleeps at most 200 ms, whatever the inputs say, so that
// the tasks a test takes over from a child end soon.
func manager(t *testing.T, store apcore.TaskStore, opts ...apcore.Option) *apcore.TaskManager {
	t.Helper()
	reg := apcore.NewRegistry()
	pid := os.Getpid()
	var seq atomic.Int64
	require.NoError(t, reg.Register("pt.work", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		n := seq.Add(1)
		ms, _ := in["ms"].(float64)
		timer := time.NewTimer(time.Duration(min(ms, 200)) * time.Millisecond)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return map[string]any{"pid": pid, "seq": n}, nil
	})))
	m, err := apcore.NewTaskManager(reg, append([]apcore.Option{apcore.WithStore(store)}, opts...)...)
	require.NoError(t, err)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = m.Shutdown(ctx)
	})
	return m
}

// child is a running ptworker.
type child struct {
	t      *testing.T
	cmd    *exec.Cmd
	lines  chan string
	exited chan struct{} // closed when the process has ended
	err    error         // what Wait returned, once exited is closed
}

// wait waits for the process to end and returns how it ended.
func (c *child) wait() error {
	<-c.exited
	return c.err
}

// start starts a ptworker with args and waits for its "ready" line.
func start(t *testing.T, args ...string) *child {
	t.Helper()
	cmd := exec.Command(worker, args...)
	cmd.Stderr = &prefixed{t: t, prefix: "ptworker: "}
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	c := &child{t: t, cmd: cmd, lines: make(chan string, 100_000), exited: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.err = cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGCONT)
		_ = cmd.Process.Kill()
		<-c.exited
	})
	return c
}

// until reads lines until one starts with prefix, and returns it, with the
// lines before it.
func (c *child) until(prefix string, within time.Duration) (string, []string) {
	c.t.Helper()
	var before []string
	deadline := time.After(within)
	for {
		select {
		case line, ok := <-c.lines:
			if !ok {
				c.t.Fatalf("ptworker ended before printing %q", prefix)
			}
			if strings.HasPrefix(line, prefix) {
				return line, before
			}
			before = append(before, line)
		case <-deadline:
			c.t.Fatalf("ptworker printed no %q within %v", prefix, within)
		}
	}
}

func (c *child) signal(sig syscall.Signal) {
	c.t.Helper()
	require.NoError(c.t, c.cmd.Process.Signal(sig))
}

// submitted parses "submitted <id> <resumable>" lines.
func submitted(lines []string) (ids []string, resumable map[string]bool) {
	resumable = map[string]bool{}
	for _, l := range lines {
		var id string
		var res bool
		if _, err := fmt.Sscanf(l, "submitted %s %t", &id, &res); err == nil {
			ids = append(ids, id)
			resumable[id] = res
		}
	}
	return ids, resumable
}

// run is one line of the run log.
type run struct {
	what, id string
	pid      int
	seq      int64
}

// readRuns reads the run log.
func readRuns(t *testing.T, path string) []run {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	var out []run
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r run
		if _, err := fmt.Sscanf(l, "%s %s %d %d", &r.what, &r.id, &r.pid, &r.seq); err == nil {
			out = append(out, r)
		}
	}
	return out
}

// prefixed writes a child's stderr to the test log.
type prefixed struct {
	t      *testing.T
	prefix string
	mu     sync.Mutex
}

func (p *prefixed) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		p.t.Log(p.prefix + l)
	}
	return len(b), nil
}

// waitAll waits for every id to be terminal through m and returns the
// records.
func waitAll(t *testing.T, m *apcore.TaskManager, ids []string, within time.Duration) map[string]apcore.TaskInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	out := map[string]apcore.TaskInfo{}
	for _, id := range ids {
		info, err := m.Wait(ctx, id)
		require.NoError(t, err, "waiting for %s", id)
		out[id] = info
	}
	return out
}

// pidOf is the pid in a pt.work result.
func pidOf(result any) int {
	m, _ := result.(map[string]any)
	f, _ := m["pid"].(float64)
	return int(f)
}

func seqOf(result any) int64 {
	m, _ := result.(map[string]any)
	f, _ := m["seq"].(float64)
	return int64(f)
}

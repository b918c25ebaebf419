// Command ptworker is the child process of the process tests: a service
// replica with one apcore TaskManager over a shared store, which the tests
// start, kill with SIGKILL, freeze with SIGSTOP and drain with SIGTERM.
//
// Its module "pt.work" sleeps inputs["ms"] milliseconds (stopping early
// when its context ends) and returns {"pid": <pid>, "seq": <run number>}.
// Every start and every return of the module is appended to -runlog as a
// line "run <task id> <pid> <seq> <unix ns>" or "done ..." ("stopped ..."
// when its context ended first), and every completed outcome of this
// process that the store took as "wrote <task id> <pid> <seq> <unix ns>",
// so the tests can count runs per task, see when each run went on, and
// check that one attempt only of each task had its outcome accepted.
//
// With -schedule SPEC, it adds the schedule -schedule-name (AddSchedule)
// of resumable pt.work tasks sleeping -ms each, as every replica of a
// service adds the same schedules: however many processes sharing the
// store add it, each tick makes one task.
//
// With -probe, it calls Submit, Status, List and TaskCount one after the
// other, each with a -probe-deadline context, every -probe, and prints
// "probe <call> <start unix ns> <elapsed ns> <deadline ns> <error or ok>"
// for each, so a test can check that callers get their answer by their
// deadline while the store does not answer.
//
//	ptworker -store postgres:DSN#table -ttl 1s -c 3 -submit 10 -resumable-every 2 -ms 3000
//	ptworker -store redis:URL#prefix -schedule "@every 1s" -ms 2500 -runlog runs
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/processtest/internal/ptstore"
)

func main() {
	storeSpec := flag.String("store", "", "the shared store: sqlite:PATH, postgres:DSN#TABLE or redis:URL#PREFIX")
	ttl := flag.Duration("ttl", time.Second, "lease TTL")
	slots := flag.Int("c", 3, "max_concurrent")
	maxTasks := flag.Int("max", 100_000, "max_tasks")
	runlog := flag.String("runlog", "", "file to append run lines to")
	submit := flag.Int("submit", 0, "tasks to submit at start")
	resumableEvery := flag.Int("resumable-every", 0, "every Nth submitted task is resumable (0: none)")
	ms := flag.Int("ms", 1000, "how long each submitted task's module sleeps, in ms")
	trickle := flag.Duration("trickle", 0, "keep submitting a non-resumable task this often")
	race := flag.Int("race", 0, "submit this many tasks as fast as possible, print 'accepted N' and exit")
	drainFor := flag.Duration("drain", 5*time.Second, "how long Drain waits on SIGTERM")
	probe := flag.Duration("probe", 0, "call Submit, Status, List and TaskCount this often, printing how long each took (0: never)")
	probeDeadline := flag.Duration("probe-deadline", 500*time.Millisecond, "the deadline of each -probe call")
	schedule := flag.String("schedule", "", "add a schedule of this spec (such as \"@every 1s\") whose ticks submit a resumable task sleeping -ms (empty: none)")
	scheduleName := flag.String("schedule-name", "pt.tick", "the name of the -schedule")
	flag.Parse()

	logger := slog.New(expected{slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})})
	ctx := context.Background()
	store, closeStore, err := ptstore.Open(ctx, *storeSpec)
	if err != nil {
		fail(err)
	}
	defer closeStore()

	log := newRunLog(*runlog)
	var seq atomic.Int64
	reg := apcore.NewRegistry()
	pid := os.Getpid()
	if err := reg.Register("pt.work", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		info, _ := apcore.TaskFromContext(ctx)
		n := seq.Add(1)
		log.line("run", info.TaskID, pid, n)
		d := 0.0
		if v, ok := in["ms"].(float64); ok {
			d = v
		} else if v, ok := in["ms"].(int); ok {
			d = float64(v)
		}
		timer := time.NewTimer(time.Duration(d) * time.Millisecond)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done():
			log.line("stopped", info.TaskID, pid, n)
			return nil, ctx.Err()
		}
		log.line("done", info.TaskID, pid, n)
		return map[string]any{"pid": pid, "seq": n}, nil
	})); err != nil {
		fail(err)
	}
	// A completed record announced with this process's result is a write of
	// this process that the store took: "wrote" lines let the tests check
	// that no two attempts of one task both had their outcome accepted.
	wrote := func(info apcore.TaskInfo) {
		res, _ := info.Result.(map[string]any)
		if info.Status != apcore.StatusCompleted || res == nil {
			return
		}
		if p, _ := res["pid"].(float64); int(p) == pid {
			s, _ := res["seq"].(float64)
			log.line("wrote", info.TaskID, pid, int64(s))
		}
	}
	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store), apcore.WithLeaseTTL(*ttl),
		apcore.WithMaxConcurrent(*slots), apcore.WithMaxTasks(*maxTasks), apcore.WithLogger(logger),
		apcore.WithObserver(wrote))
	if err != nil {
		fail(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var outMu sync.Mutex
	say := func(format string, args ...any) {
		outMu.Lock()
		defer outMu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
		_ = out.Flush()
	}

	if *race > 0 {
		var accepted atomic.Int64
		var wg sync.WaitGroup
		for range *race {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := mgr.Submit(ctx, "pt.work", map[string]any{"ms": *ms}); err == nil {
					accepted.Add(1)
				}
			}()
		}
		wg.Wait()
		say("accepted %d", accepted.Load())
		// Exit without Shutdown, as a process that stops: the records stay
		// for the test to count.
		os.Exit(0)
	}

	for i := range *submit {
		var opts []apcore.SubmitOption
		resumable := *resumableEvery > 0 && i%*resumableEvery == 0
		if resumable {
			opts = append(opts, apcore.WithResumable())
		}
		id, err := mgr.Submit(ctx, "pt.work", map[string]any{"ms": *ms}, opts...)
		if err != nil {
			fail(err)
		}
		say("submitted %s %v", id, resumable)
	}
	if *trickle > 0 {
		go func() {
			for range time.Tick(*trickle) {
				if id, err := mgr.Submit(ctx, "pt.work", map[string]any{"ms": 5}); err == nil {
					say("submitted %s false", id)
				}
			}
		}()
	}
	if *schedule != "" {
		if err := mgr.AddSchedule(apcore.Schedule{Name: *scheduleName, Spec: *schedule, ModuleID: "pt.work",
			Inputs: map[string]any{"ms": *ms}, Options: []apcore.SubmitOption{apcore.WithResumable()}}); err != nil {
			fail(err)
		}
	}
	if *probe > 0 {
		go probeLoop(mgr, say, *probe, *probeDeadline)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT) // before "ready": the test may signal at once
	say("ready %d", pid)
	sig := <-sigs
	stop, cancel := context.WithTimeout(ctx, *drainFor)
	defer cancel()
	if sig == syscall.SIGTERM {
		err = mgr.Drain(stop)
	} else {
		err = mgr.Shutdown(stop)
	}
	say("stopped %v", err)
}

// probeLoop calls the manager's caller-facing methods, each with a context
// that ends after deadline, one after the other, every interval, and says
// how long each took.
func probeLoop(mgr *apcore.TaskManager, say func(string, ...any), interval, deadline time.Duration) {
	lastID := ""
	call := func(name string, fn func(ctx context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		err := fn(ctx)
		elapsed := time.Since(start)
		outcome := "ok"
		if err != nil {
			outcome = strings.ReplaceAll(err.Error(), "\n", " ")
		}
		say("probe %s %d %d %d %s", name, start.UnixNano(), elapsed.Nanoseconds(), deadline.Nanoseconds(), outcome)
	}
	for range time.Tick(interval) {
		call("Submit", func(ctx context.Context) error {
			id, err := mgr.Submit(ctx, "pt.work", map[string]any{"ms": 5})
			if err == nil {
				lastID = id
				say("submitted %s false", id)
			}
			return err
		})
		if lastID != "" {
			call("Status", func(ctx context.Context) error { _, err := mgr.Status(ctx, lastID); return err })
		}
		call("List", func(ctx context.Context) error { _, err := mgr.List(ctx, apcore.StatusRunning); return err })
		call("TaskCount", func(ctx context.Context) error { _, err := mgr.TaskCount(ctx); return err })
	}
}

// expected marks every record "(expected in this test)": this process is
// a replica that the tests kill, freeze and cut off from its store, and the
// lease and store errors it logs (at WARN and ERROR) are what they
// provoke, not a fault of the run. The tests judge the outcome by the
// records and the run log, not by these lines.
type expected struct{ slog.Handler }

func (h expected) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, "(expected in this test) "+r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool { out.AddAttrs(a); return true })
	return h.Handler.Handle(ctx, out)
}

func (h expected) WithAttrs(attrs []slog.Attr) slog.Handler {
	return expected{h.Handler.WithAttrs(attrs)}
}

func (h expected) WithGroup(name string) slog.Handler { return expected{h.Handler.WithGroup(name)} }

func fail(err error) {
	fmt.Fprintln(os.Stderr, "ptworker:", err)
	os.Exit(2)
}

// runLog appends whole lines to a file shared by every process of a test.
type runLog struct {
	mu sync.Mutex
	f  *os.File
}

func newRunLog(path string) *runLog {
	if path == "" {
		return &runLog{}
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fail(err)
	}
	return &runLog{f: f}
}

// line appends one line with a single write, which O_APPEND keeps whole.
func (l *runLog) line(what, id string, pid int, seq int64) {
	if l.f == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := fmt.Fprintf(l.f, "%s %s %d %d %d\n", what, id, pid, seq, time.Now().UnixNano()); err != nil {
		fail(err)
	}
}

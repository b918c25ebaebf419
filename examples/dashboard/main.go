// Command dashboard serves apcorehttp's page for a manager that runs a
// stream of example tasks: quick ones, slow ones that report progress,
// flaky ones that succeed after retries, and failing ones. From the
// repository's root:
//
//	go run ./examples/dashboard            # then open http://127.0.0.1:8080/
//	go run ./examples/dashboard -addr 127.0.0.1:9000 -every 300ms
//
// Ctrl-C stops it: the server closes its connections and the manager
// cancels what is still running.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "the address to serve the dashboard on")
	every := flag.Duration("every", time.Second, "how often to submit an example task")
	readOnly := flag.Bool("readonly", false, "serve the page without cancel buttons")
	flag.Parse()
	if err := run(*addr, *every, *readOnly); err != nil {
		log.Fatal(err)
	}
}

func run(addr string, every time.Duration, readOnly bool) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	mgr, err := apcore.NewTaskManager(exampleModules(), apcore.WithMaxConcurrent(4), apcore.WithMaxTasks(200))
	if err != nil {
		return err
	}
	// Keep ten minutes of finished records, so the page shows some history.
	reaper, err := mgr.StartReaper(apcore.ReaperConfig{TTL: 10 * time.Minute, SweepInterval: time.Minute})
	if err != nil {
		return err
	}

	var opts []apcorehttp.Option
	if readOnly {
		opts = append(opts, apcorehttp.ReadOnly())
	}
	dashboard, err := apcorehttp.NewHandler(mgr, opts...)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/", dashboard)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests end with ctx, so open event streams close on Ctrl-C.
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	fmt.Printf("apcore dashboard: http://%s/  (Ctrl-C to stop)\n", ln.Addr())

	submitExamples(ctx, mgr, every)

	stop() // a second Ctrl-C kills the process at once
	fmt.Println("stopping…")
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = srv.Shutdown(shutCtx)
	if e := <-serveErr; !errors.Is(e, http.ErrServerClosed) {
		err = errors.Join(err, e)
	}
	return errors.Join(err, reaper.Stop(shutCtx), mgr.Shutdown(shutCtx))
}

// submitExamples submits a random example task every interval until ctx
// ends.
func submitExamples(ctx context.Context, mgr *apcore.TaskManager, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	n := 0
	for {
		n++
		var err error
		switch r := rand.IntN(100); {
		case r < 45:
			_, err = mgr.Submit(ctx, "demo.quick", map[string]any{"n": n})
		case r < 75:
			_, err = mgr.Submit(ctx, "demo.slow", map[string]any{"n": n, "steps": 5 + rand.IntN(10)})
		case r < 92:
			_, err = mgr.Submit(ctx, "demo.flaky", map[string]any{"n": n},
				apcore.WithRetry(apcore.RetryConfig{MaxRetries: 3, RetryDelay: 300 * time.Millisecond}))
		default:
			_, err = mgr.Submit(ctx, "demo.failing", map[string]any{"n": n})
		}
		if err != nil && !errors.Is(err, apcore.ErrTaskLimitExceeded) {
			log.Printf("submit: %v", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// slowIn is demo.slow's input.
type slowIn struct {
	Steps int `json:"steps"`
}

func exampleModules() *apcore.Registry {
	reg := apcore.NewRegistry()
	must := func(err error) {
		if err != nil {
			panic(err)
		}
	}
	must(reg.Register("demo.quick", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if err := sleep(ctx, time.Duration(50+rand.IntN(400))*time.Millisecond); err != nil {
			return nil, err
		}
		return map[string]any{"n": in["n"], "answer": 42}, nil
	})))
	// Typed: the inputs arrive as a slowIn, an int whatever the store.
	must(reg.Register("demo.slow", apcore.Typed(func(ctx context.Context, in slowIn) (string, error) {
		steps := max(in.Steps, 1)
		for i := 1; i <= steps; i++ {
			if err := sleep(ctx, time.Duration(400+rand.IntN(600))*time.Millisecond); err != nil {
				return "", err
			}
			_ = apcore.ReportProgress(ctx, float64(100*i/steps), fmt.Sprintf("step %d of %d", i, steps))
		}
		return fmt.Sprintf("processed %d steps", steps), nil
	})))
	must(reg.Register("demo.flaky", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if err := sleep(ctx, time.Duration(200+rand.IntN(800))*time.Millisecond); err != nil {
			return nil, err
		}
		if rand.IntN(100) < 55 {
			return nil, errors.New("upstream timed out (will retry)")
		}
		return "ok after a wobble", nil
	})))
	must(reg.Register("demo.failing", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		if err := sleep(ctx, time.Duration(100+rand.IntN(300))*time.Millisecond); err != nil {
			return nil, err
		}
		return nil, apcore.Permanent(fmt.Errorf("invoice %v: <b>card declined</b> & \"quoted\"", in["n"]))
	})))
	return reg
}

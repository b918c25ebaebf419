package apcorehttp_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

// What one open dashboard costs the manager. Run with:
//
//	go test -run '^$' -bench ObservedThroughput -benchtime 21x .
//
// Each iteration runs the same workload on fresh managers three times, in
// rotating order: alone; with one client reading GET /api/events, as an
// open page does; and, for reference, with a subscriber that does nothing
// (what any observer costs the core). The workload is n no-op tasks with
// max_concurrent 100, all submitted, then each waited for (the core's
// BenchmarkSubmitWait). It reports the median rate alone and the medians
// of the per-iteration ratios to it: the share of its throughput the
// manager keeps. On a shared machine single runs vary by ±30%; the
// rotation and the medians are there for that.

const observedTasks = 100_000

var noop = apcore.ExecutorFunc(func(context.Context, string, map[string]any) (any, error) { return nil, nil })

// The three ways the workload runs.
const (
	alone = iota
	watched
	subscribed
)

func BenchmarkObservedThroughput(b *testing.B) {
	var rates [3][]float64
	var ratioWatched, ratioSubscribed, events []float64
	i := 0
	for b.Loop() {
		var rate [3]float64
		for k := range 3 {
			mode := (i + k) % 3
			var n int
			rate[mode], n = observedRun(b, mode)
			if mode == watched {
				events = append(events, float64(n))
			}
		}
		i++
		for m := range rate {
			rates[m] = append(rates[m], rate[m])
		}
		ratioWatched = append(ratioWatched, rate[watched]/rate[alone])
		ratioSubscribed = append(ratioSubscribed, rate[subscribed]/rate[alone])
	}
	b.ReportMetric(median(rates[alone]), "tasks/s-alone")
	b.ReportMetric(median(rates[watched]), "tasks/s-watched")
	b.ReportMetric(median(ratioWatched), "ratio-watched")
	b.ReportMetric(median(ratioSubscribed), "ratio-noop-subscriber")
	b.ReportMetric(median(events), "events-read")
	b.Logf("ratios watched/alone, sorted: %.2f", sorted(ratioWatched))
	b.Logf("ratios no-op subscriber/alone, sorted: %.2f", sorted(ratioSubscribed))
}

// observedRun runs the workload once on a fresh manager in the given mode
// and returns the tasks per second and, watched, how many events the
// client read.
func observedRun(b *testing.B, mode int) (rate float64, events int) {
	b.Helper()
	ctx := context.Background()
	mgr, err := apcore.NewTaskManager(noop, apcore.WithMaxConcurrent(100), apcore.WithMaxTasks(observedTasks+10))
	if err != nil {
		b.Fatal(err)
	}
	var stop func() int
	switch mode {
	case watched:
		stop = watch(b, mgr)
	case subscribed:
		unsub, err := mgr.Subscribe(func(apcore.TaskInfo) {})
		if err != nil {
			b.Fatal(err)
		}
		stop = func() int { unsub(); return 0 }
	}
	ids := make([]string, observedTasks)
	start := time.Now()
	for i := range ids {
		if ids[i], err = mgr.Submit(ctx, "bench.noop", nil); err != nil {
			b.Fatal(err)
		}
	}
	for _, id := range ids {
		if _, err := mgr.Wait(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	rate = observedTasks / time.Since(start).Seconds()
	if stop != nil {
		events = stop()
	}
	if err := mgr.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	return rate, events
}

// watch serves mgr's dashboard and connects one client that reads its
// event stream; stop disconnects it, stops the server and returns how many
// events and resync notices the client read.
func watch(b *testing.B, mgr *apcore.TaskManager) (stop func() int) {
	b.Helper()
	h, err := apcorehttp.NewHandler(mgr)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events", nil)
	if err != nil {
		b.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	if !apcorehttp.WaitHub(h, 5*time.Second, func(clients, _ int, running bool) bool { return clients == 1 && running }) {
		b.Fatal("the event client never registered")
	}
	read := make(chan int)
	go func() {
		defer res.Body.Close()
		n := 0
		r := bufio.NewReaderSize(res.Body, 64<<10)
		for {
			line, err := r.ReadSlice('\n')
			if bytes.HasPrefix(line, []byte("data: ")) {
				n++
			}
			if err != nil && err != bufio.ErrBufferFull {
				read <- n
				return
			}
		}
	}()
	return func() int {
		cancel()
		n := <-read
		srv.Close()
		return n
	}
}

func median(xs []float64) float64 {
	s := sorted(xs)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func sorted(xs []float64) []float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s
}

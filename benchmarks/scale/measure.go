package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

// sizeResult is what was measured on one store filled with n records.
type sizeResult struct {
	n       int
	fill    time.Duration // how long the fill took (not a figure of the table)
	counted int           // records the store counted after the fill

	pageTime     time.Duration // the first dashboard page: median of the runs
	pageBytes    int64
	pageAPIBytes int64    // of which the JSON API calls
	pageCalls    []string // what the page fetched, with each request's time and size (last run)

	lists []listResult

	submitP50, submitP99 time.Duration
	submits              int
	events               int64 // events the client read while the tasks ran

	reaped int
	reap   time.Duration

	slowlog     bool          // the backend has a SLOWLOG
	slowest     time.Duration // the longest command from the fill's end to the Reap's
	slowestCmd  string
	fillSlowest time.Duration // the longest command of the fill
}

// listResult is one kind of ListPage call: its median time, and how many
// records its pages held (the smallest of the calls).
type listResult struct {
	name  string
	took  time.Duration
	tasks int
}

// listKinds are the ListPage calls measured.
var listKinds = []struct {
	name string
	opts apcore.ListOptions
}{
	{"ListPage 100, oldest first", apcore.ListOptions{Limit: 100}},
	{"ListPage 100, newest first", apcore.ListOptions{Limit: 100, Newest: true}},
	{"ListPage 100, status completed", apcore.ListOptions{Limit: 100, Status: apcore.StatusCompleted}},
	{"ListPage 100, status pending (the newest few hundred)", apcore.ListOptions{Limit: 100, Status: apcore.StatusPending}},
}

// wantPage is how many records a ListPage of kind k should hold on a
// store of n records.
func wantPage(k, n int) int {
	if listKinds[k].opts.Status == apcore.StatusPending {
		return min(100, pendingCount(n))
	}
	return min(100, n-pendingCount(n))
}

// noopModule is the module the measured submits run.
const noopModule = "bench.noop"

// registry knows noopModule and every module of the filled records (a
// manager never runs those, but a page of modules it knows is the usual
// case).
func registry() *apcore.Registry {
	reg := apcore.NewRegistry()
	noop := apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) { return nil, nil })
	for _, m := range append([]string{noopModule}, modules...) {
		if err := reg.Register(m, noop); err != nil {
			panic(err)
		}
	}
	return reg
}

// measureSize opens a fresh store of b, fills it with n records, and
// measures on it, in this order: the first dashboard page, ListPage, Submit
// with an event client connected, then Reap of every expired record.
func (c *config) measureSize(ctx context.Context, b backend, n int) (r sizeResult, err error) {
	r.n = n
	store, err := b.open(ctx)
	if err != nil {
		return r, fmt.Errorf("open: %w", err)
	}
	defer func() {
		if cerr := b.close(context.Background()); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	sl, hasSlowlog := b.(slowLogger)
	if hasSlowlog {
		if err := sl.resetSlowlog(ctx); err != nil {
			return r, fmt.Errorf("SLOWLOG RESET: %w", err)
		}
	}
	now := time.Now()
	began := time.Now()
	if err := b.fill(ctx, store, n, now); err != nil {
		return r, fmt.Errorf("fill: %w", err)
	}
	r.fill = time.Since(began)
	if hasSlowlog {
		if r.fillSlowest, _, err = sl.longest(ctx); err != nil {
			return r, fmt.Errorf("SLOWLOG GET: %w", err)
		}
	}
	counter, ok := store.(apcore.Counter)
	if !ok {
		return r, fmt.Errorf("%s is not an apcore.Counter", store.Name())
	}
	if r.counted, err = counter.Count(ctx); err != nil {
		return r, fmt.Errorf("count: %w", err)
	}
	if r.counted != n {
		return r, fmt.Errorf("the store counts %d records after filling %d", r.counted, n)
	}
	c.logf("  %-8s %9d records filled in %6.1f s (%.0f records/s)\n", b.name(), n, r.fill.Seconds(), float64(n)/r.fill.Seconds())

	if hasSlowlog {
		if err := sl.resetSlowlog(ctx); err != nil {
			return r, fmt.Errorf("SLOWLOG RESET: %w", err)
		}
	}

	var ended atomic.Int64
	mgr, err := apcore.NewTaskManager(registry(),
		apcore.WithStore(store),
		apcore.WithMaxConcurrent(16),
		apcore.WithMaxTasks(100_000),
		apcore.WithLogger(c.log),
		apcore.WithObserver(func(info apcore.TaskInfo) {
			if info.Status.IsTerminal() && info.ModuleID == noopModule {
				ended.Add(1)
			}
		}),
	)
	if err != nil {
		return r, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if serr := mgr.Shutdown(sctx); err == nil && serr != nil {
			err = fmt.Errorf("shutdown: %w", serr)
		}
	}()

	if err := c.measurePage(ctx, mgr, &r); err != nil {
		return r, fmt.Errorf("dashboard: %w", err)
	}
	if err := c.measureLists(ctx, mgr, &r); err != nil {
		return r, fmt.Errorf("ListPage: %w", err)
	}
	if err := c.measureSubmits(ctx, mgr, &ended, &r); err != nil {
		return r, fmt.Errorf("submit: %w", err)
	}
	runtime.GC()
	began = time.Now()
	r.reaped, err = mgr.Reap(ctx, time.Now())
	r.reap = time.Since(began)
	if err != nil {
		return r, fmt.Errorf("reap: %w", err)
	}
	// Every finished record went: the filled ones and the submitted ones.
	if want := n - pendingCount(n) + r.submits + c.warmup(); r.reaped != want {
		return r, fmt.Errorf("reap deleted %d records, want %d", r.reaped, want)
	}
	c.logf("  %-8s %9d reap: %d records in %.2f s\n", b.name(), n, r.reaped, r.reap.Seconds())
	if hasSlowlog {
		r.slowlog = true
		if r.slowest, r.slowestCmd, err = sl.longest(ctx); err != nil {
			return r, fmt.Errorf("SLOWLOG GET: %w", err)
		}
		c.logf("  %-8s %9d longest command: %v (%s)\n", b.name(), n, r.slowest, r.slowestCmd)
	}
	return r, nil
}

// ---- the dashboard's first page ----------------------------------------

// dashboardAPI are the JSON API calls the page makes when it loads
// (apcorehttp/static/app.js: loadPage with its default state, newest
// first, 50 records, and loadSummary), relative to the mount point. The page's script and style
// sheet are found in the page itself.
var dashboardAPI = []string{
	"api/tasks?order=desc&limit=50",
	"api/summary",
}

// assetRef finds the script and style sheet the page links to.
var assetRef = regexp.MustCompile(`(?:src|href)="([^"#:]+\.(?:js|css))"`)

// phaseBudget bounds the repetitions of one measurement: once it has taken
// this long, the median is taken of the runs made (one at least), so that
// a store whose calls cost seconds at 1M records (one without the Pager
// capability) still ends in minutes.
const phaseBudget = 30 * time.Second

// measurePage loads the first page of a fresh handler (so nothing is
// cached) c.runs times (within phaseBudget): GET /, its script and style sheet, and the API
// calls it makes on load, one after the other, each read to its end. The
// time and bytes of the median run are kept.
func (c *config) measurePage(ctx context.Context, mgr *apcore.TaskManager, r *sizeResult) error {
	type load struct {
		took  time.Duration
		bytes int64
		api   int64 // the bytes of the API calls
		calls []string
	}
	var loads []load
	began := time.Now()
	for run := 0; run < c.runs && (run == 0 || time.Since(began) < phaseBudget); run++ {
		h, err := apcorehttp.NewHandler(mgr)
		if err != nil {
			return err
		}
		srv := httptest.NewServer(h)
		runtime.GC()
		var l load
		start := time.Now()
		page, err := get(ctx, srv.URL+"/", &l.bytes, &l.calls)
		if err == nil {
			urls := []string{}
			for _, m := range assetRef.FindAllStringSubmatch(string(page), -1) {
				urls = append(urls, strings.TrimPrefix(m[1], "./"))
			}
			if len(urls) == 0 {
				err = errors.New("the page links to no script or style sheet")
			}
			for _, u := range append(urls, dashboardAPI...) {
				if err != nil {
					break
				}
				var body []byte
				body, err = get(ctx, srv.URL+"/"+u, &l.bytes, &l.calls)
				if strings.HasPrefix(u, "api/") {
					l.api += int64(len(body))
				}
			}
		}
		l.took = time.Since(start)
		srv.Close()
		if err != nil {
			return err
		}
		loads = append(loads, l)
	}
	slices.SortFunc(loads, func(a, b load) int { return int(a.took - b.took) })
	m := loads[len(loads)/2]
	r.pageTime, r.pageBytes, r.pageAPIBytes, r.pageCalls = m.took, m.bytes, m.api, m.calls
	c.logf("  %-8s %9d first page: %s in %v (%s)\n", "", r.n, byteSize(r.pageBytes), r.pageTime.Round(time.Microsecond), strings.Join(r.pageCalls, ", "))
	return nil
}

// get reads url to its end, adding its size to *bytes and a note to
// *calls; anything but 200 is an error.
func get(ctx context.Context, url string, bytes *int64, calls *[]string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	began := time.Now()
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if err != nil {
		return nil, err
	}
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.200s", url, res.Status, body)
	}
	*bytes += int64(len(body))
	path := url[strings.Index(url[len("http://"):], "/")+len("http://"):]
	*calls = append(*calls, fmt.Sprintf("%s %s %v", path, byteSize(int64(len(body))), time.Since(began).Round(time.Microsecond)))
	return body, nil
}

// ---- ListPage -------------------------------------------------------------

// measureLists times c.calls calls of each kind of ListPage (within
// phaseBudget), after one that is not timed, and keeps the median; every page must hold what the
// store has to give (see wantPage).
func (c *config) measureLists(ctx context.Context, mgr *apcore.TaskManager, r *sizeResult) error {
	for k, kind := range listKinds {
		var took []time.Duration
		fewest := -1
		began := time.Now()
		for i := 0; i < c.calls+1 && (i < 2 || time.Since(began) < phaseBudget); i++ {
			began := time.Now()
			page, err := mgr.ListPage(ctx, kind.opts)
			d := time.Since(began)
			if err != nil {
				return fmt.Errorf("%s: %w", kind.name, err)
			}
			if got, want := len(page.Tasks), wantPage(k, r.n); got != want {
				return fmt.Errorf("%s: %d records on the page, want %d", kind.name, got, want)
			}
			if fewest < 0 || len(page.Tasks) < fewest {
				fewest = len(page.Tasks)
			}
			if i > 0 {
				took = append(took, d)
			}
		}
		r.lists = append(r.lists, listResult{name: kind.name, took: medianDuration(took), tasks: fewest})
	}
	var parts []string
	for _, l := range r.lists {
		parts = append(parts, l.took.Round(time.Microsecond).String())
	}
	c.logf("  %-8s %9d ListPage: %s\n", "", r.n, strings.Join(parts, ", "))
	return nil
}

// ---- Submit with an event client connected ----------------------------------

// warmup is how many submits go before the timed ones.
func (c *config) warmup() int { return min(50, c.submits/10) }

// submitEvery paces the measured submits: 500 a second, so that 2,000 of
// them span four seconds, and the tasks run and their events go out
// between them, as under a steady load, rather than in one burst of a few
// milliseconds that no periodic work of the manager or the dashboard (the
// event stream's poll of the store every 0.8 s) would overlap.
const submitEvery = 2 * time.Millisecond

// measureSubmits connects a client to GET /api/events, reading it all the
// time, then submits c.warmup() no-op tasks, then c.submits of them, one
// after the other every submitEvery, each timed, waits for them all to
// end, and keeps the median and the 99th percentile.
func (c *config) measureSubmits(ctx context.Context, mgr *apcore.TaskManager, ended *atomic.Int64, r *sizeResult) error {
	h, err := apcorehttp.NewHandler(mgr)
	if err != nil {
		return err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ectx, stop := context.WithCancel(ctx)
	defer stop()
	req, err := http.NewRequestWithContext(ectx, http.MethodGet, srv.URL+"/api/events", nil)
	if err != nil {
		return err
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		_ = res.Body.Close()
		return fmt.Errorf("GET /api/events: %s", res.Status)
	}
	var events atomic.Int64
	reading := make(chan struct{})
	go func() {
		defer close(reading)
		defer res.Body.Close()
		br := bufio.NewReaderSize(res.Body, 64<<10)
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 && strings.HasPrefix(string(line), "data:") {
				events.Add(1)
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()

	start := ended.Load()
	runtime.GC()
	took := make([]time.Duration, 0, c.submits)
	tick := time.NewTicker(submitEvery)
	defer tick.Stop()
	for i := range c.warmup() + c.submits {
		<-tick.C
		began := time.Now()
		if _, err := mgr.Submit(ctx, noopModule, map[string]any{"i": i}); err != nil {
			return err
		}
		if i >= c.warmup() {
			took = append(took, time.Since(began))
		}
	}
	want := start + int64(c.warmup()+c.submits)
	deadline := time.Now().Add(2 * time.Minute)
	for ended.Load() < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d tasks ended after 2 minutes", ended.Load()-start, want-start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Let the last batch of events out (they are sent every 50 ms).
	for wait := time.Now().Add(2 * time.Second); events.Load() == 0 && time.Now().Before(wait); {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	stop()
	<-reading
	slices.Sort(took)
	r.submits = c.submits
	r.submitP50 = took[len(took)/2]
	r.submitP99 = took[min(len(took)-1, len(took)*99/100)]
	r.events = events.Load()
	if r.events == 0 {
		return errors.New("the event client read no event")
	}
	c.logf("  %-8s %9d Submit: p50 %v, p99 %v, max %v; %d events read\n", "", r.n,
		r.submitP50.Round(time.Microsecond), r.submitP99.Round(time.Microsecond), took[len(took)-1].Round(time.Microsecond), r.events)
	return nil
}

// medianDuration is the median of ds (the lower middle one for an even
// count).
func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// byteSize prints n bytes.
func byteSize(n int64) string {
	switch {
	case n >= 10<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 10<<10:
		return fmt.Sprintf("%.0f kB", float64(n)/(1<<10))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f kB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

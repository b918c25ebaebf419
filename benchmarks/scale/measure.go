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
	pageCalls    []string // what the page fetched, with each request's time and size (the median run)

	lists []listResult

	submitP50, submitP99 time.Duration // medians of the rounds'
	submits              int           // timed submits in all
	events               int64         // events the client read while the tasks ran

	reaped int
	reap   time.Duration

	slowlog     bool          // the backend has a SLOWLOG
	slowest     time.Duration // the longest command about this store, from the fills' end to the Reaps'
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

// sized is one of a backend's two stores, the small and the large, with
// the manager over it.
type sized struct {
	n     int
	store apcore.TaskStore
	mgr   *apcore.TaskManager
	ended atomic.Int64 // the no-op tasks that ended
	r     sizeResult
}

// measureStore opens two stores of b and fills one with c.sizes[0]
// records, the other with c.sizes[1], starts a manager on each, and
// measures, in this order: the first dashboard page, ListPage, Submit with
// an event client connected, and Reap of every expired record. Each
// measurement alternates between the two stores, call by call or run by
// run, so that whatever else the machine does falls on both alike.
func (c *config) measureStore(ctx context.Context, b backend) (res [2]sizeResult, err error) {
	defer func() {
		if cerr := b.close(context.Background()); err == nil && cerr != nil {
			err = fmt.Errorf("close: %w", cerr)
		}
	}()
	sl, hasSlowlog := b.(slowLogger)
	xs := []*sized{{n: c.sizes[0]}, {n: c.sizes[1]}}
	for _, x := range xs {
		x.r.n = x.n
		if x.store, err = b.open(ctx, x.n); err != nil {
			return res, fmt.Errorf("open for %d: %w", x.n, err)
		}
		if err := c.fill(ctx, b, x, sl); err != nil {
			return res, fmt.Errorf("%d records: %w", x.n, err)
		}
	}
	if hasSlowlog {
		if err := sl.resetSlowlog(ctx); err != nil {
			return res, fmt.Errorf("SLOWLOG RESET: %w", err)
		}
	}

	for _, x := range xs {
		x.mgr, err = apcore.NewTaskManager(registry(),
			apcore.WithStore(x.store),
			apcore.WithMaxConcurrent(16),
			apcore.WithMaxTasks(100_000),
			apcore.WithLogger(c.log),
			apcore.WithObserver(func(info apcore.TaskInfo) {
				if info.Status.IsTerminal() && info.ModuleID == noopModule {
					x.ended.Add(1)
				}
			}),
		)
		if err != nil {
			return res, err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if serr := x.mgr.Shutdown(sctx); err == nil && serr != nil {
				err = fmt.Errorf("shutdown: %w", serr)
			}
		}()
	}

	if err := c.measurePage(ctx, b.name(), xs); err != nil {
		return res, fmt.Errorf("dashboard: %w", err)
	}
	if err := c.measureLists(ctx, b.name(), xs); err != nil {
		return res, fmt.Errorf("ListPage: %w", err)
	}
	if err := c.measureSubmits(ctx, b.name(), xs); err != nil {
		return res, fmt.Errorf("submit: %w", err)
	}
	for _, x := range xs {
		runtime.GC()
		began := time.Now()
		x.r.reaped, err = x.mgr.Reap(ctx, time.Now())
		x.r.reap = time.Since(began)
		if err != nil {
			return res, fmt.Errorf("reap, %d records: %w", x.n, err)
		}
		// Every finished record went: the filled ones and the submitted ones.
		if want := x.n - pendingCount(x.n) + x.r.submits + c.warmup(); x.r.reaped != want {
			return res, fmt.Errorf("reap deleted %d of %d records, want %d", x.r.reaped, x.n, want)
		}
		c.logf("  %-8s %9d Reap: %d records in %.2f s\n", b.name(), x.n, x.r.reaped, x.r.reap.Seconds())
	}
	if hasSlowlog {
		entries, err := sl.slowlog(ctx)
		if err != nil {
			return res, fmt.Errorf("SLOWLOG GET: %w", err)
		}
		for _, x := range xs {
			x.r.slowlog = true
			x.r.slowest, x.r.slowestCmd = longest(entries, sl.prefix(x.n), commonPrefix)
			if x.r.slowest == 0 {
				c.logf("  %-8s %9d longest command: none took 1 ms\n", b.name(), x.n)
				continue
			}
			c.logf("  %-8s %9d longest command: %v (%s)\n", b.name(), x.n, x.r.slowest, x.r.slowestCmd)
		}
	}
	return [2]sizeResult{xs[0].r, xs[1].r}, nil
}

// fill fills x's store and checks that it counts what was written; on
// Redis it notes the longest command of the fill.
func (c *config) fill(ctx context.Context, b backend, x *sized, sl slowLogger) error {
	if sl != nil {
		if err := sl.resetSlowlog(ctx); err != nil {
			return fmt.Errorf("SLOWLOG RESET: %w", err)
		}
	}
	began := time.Now()
	if err := b.fill(ctx, x.store, x.n, time.Now()); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	x.r.fill = time.Since(began)
	if sl != nil {
		entries, err := sl.slowlog(ctx)
		if err != nil {
			return fmt.Errorf("SLOWLOG GET: %w", err)
		}
		x.r.fillSlowest, _ = longest(entries, "", commonPrefix)
	}
	counter, ok := x.store.(apcore.Counter)
	if !ok {
		return fmt.Errorf("%s is not an apcore.Counter", x.store.Name())
	}
	var err error
	if x.r.counted, err = counter.Count(ctx); err != nil {
		return fmt.Errorf("count: %w", err)
	}
	if x.r.counted != x.n {
		return fmt.Errorf("the store counts %d records after filling %d", x.r.counted, x.n)
	}
	c.logf("  %-8s %9d records filled in %6.1f s (%.0f records/s)\n", b.name(), x.n, x.r.fill.Seconds(), float64(x.n)/x.r.fill.Seconds())
	return nil
}

// ---- the dashboard's first page ----------------------------------------

// dashboardAPI are the JSON API calls the page makes when it loads
// (apcorehttp/static/app.js: loadPage with its default state, newest
// first, 50 records, and loadSummary), relative to the mount point. The
// page's script and style sheet are found in the page itself.
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

// pageLoad is one load of the first page.
type pageLoad struct {
	took  time.Duration
	bytes int64
	api   int64 // the bytes of the API calls
	calls []string
}

// measurePage loads the first page c.runs times (within phaseBudget) from
// each store in turn, and keeps the median load of each.
func (c *config) measurePage(ctx context.Context, name string, xs []*sized) error {
	loads := make([][]pageLoad, len(xs))
	began := time.Now()
	for run := 0; run < c.runs && (run == 0 || time.Since(began) < phaseBudget); run++ {
		for i, x := range xs {
			l, err := loadPage(ctx, x.mgr)
			if err != nil {
				return fmt.Errorf("%d records: %w", x.n, err)
			}
			loads[i] = append(loads[i], l)
		}
	}
	for i, x := range xs {
		slices.SortFunc(loads[i], func(a, b pageLoad) int { return int(a.took - b.took) })
		m := loads[i][(len(loads[i])-1)/2]
		x.r.pageTime, x.r.pageBytes, x.r.pageAPIBytes, x.r.pageCalls = m.took, m.bytes, m.api, m.calls
		c.logf("  %-8s %9d first page: %s in %v (%s)\n", name, x.n, byteSize(m.bytes), m.took.Round(time.Microsecond), strings.Join(m.calls, ", "))
	}
	return nil
}

// loadPage loads the first page of a fresh handler (so nothing is
// cached): GET /, its script and style sheet, and the API calls it makes
// on load, one after the other, each read to its end.
func loadPage(ctx context.Context, mgr *apcore.TaskManager) (pageLoad, error) {
	var l pageLoad
	h, err := apcorehttp.NewHandler(mgr)
	if err != nil {
		return l, err
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	runtime.GC()
	start := time.Now()
	page, err := get(ctx, srv.URL+"/", &l.bytes, &l.calls)
	if err != nil {
		return l, err
	}
	var urls []string
	for _, m := range assetRef.FindAllStringSubmatch(string(page), -1) {
		urls = append(urls, strings.TrimPrefix(m[1], "./"))
	}
	if len(urls) == 0 {
		return l, errors.New("the page links to no script or style sheet")
	}
	for _, u := range append(urls, dashboardAPI...) {
		body, err := get(ctx, srv.URL+"/"+u, &l.bytes, &l.calls)
		if err != nil {
			return l, err
		}
		if strings.HasPrefix(u, "api/") {
			l.api += int64(len(body))
		}
	}
	l.took = time.Since(start)
	return l, nil
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

// measureLists times c.calls calls of each kind of ListPage on each store
// in turn (within phaseBudget), after one on each that is not timed, and
// keeps the medians; every page must hold what the store has to give (see
// wantPage).
func (c *config) measureLists(ctx context.Context, name string, xs []*sized) error {
	for k, kind := range listKinds {
		took := make([][]time.Duration, len(xs))
		fewest := make([]int, len(xs))
		began := time.Now()
		for i := 0; i < c.calls+1 && (i < 2 || time.Since(began) < phaseBudget); i++ {
			for j, x := range xs {
				start := time.Now()
				page, err := x.mgr.ListPage(ctx, kind.opts)
				d := time.Since(start)
				if err != nil {
					return fmt.Errorf("%s, %d records: %w", kind.name, x.n, err)
				}
				if got, want := len(page.Tasks), wantPage(k, x.n); got != want {
					return fmt.Errorf("%s, %d records: %d records on the page, want %d", kind.name, x.n, got, want)
				}
				if i == 0 || len(page.Tasks) < fewest[j] {
					fewest[j] = len(page.Tasks)
				}
				if i > 0 {
					took[j] = append(took[j], d)
				}
			}
		}
		for j, x := range xs {
			x.r.lists = append(x.r.lists, listResult{name: kind.name, took: medianDuration(took[j]), tasks: fewest[j]})
		}
	}
	for _, x := range xs {
		var parts []string
		for _, l := range x.r.lists {
			parts = append(parts, l.took.Round(time.Microsecond).String())
		}
		c.logf("  %-8s %9d ListPage: %s\n", name, x.n, strings.Join(parts, ", "))
	}
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

// eventClient reads GET /api/events of a handler on a manager, all the
// time, counting the events' data lines.
type eventClient struct {
	srv     *httptest.Server
	stop    context.CancelFunc
	reading chan struct{}
	events  atomic.Int64
}

// listen serves a fresh handler on mgr and connects a client to its event
// stream.
func listen(ctx context.Context, mgr *apcore.TaskManager) (*eventClient, error) {
	h, err := apcorehttp.NewHandler(mgr)
	if err != nil {
		return nil, err
	}
	ec := &eventClient{srv: httptest.NewServer(h), reading: make(chan struct{})}
	ctx, ec.stop = context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ec.srv.URL+"/api/events", nil)
	if err == nil {
		var res *http.Response
		if res, err = http.DefaultClient.Do(req); err == nil && res.StatusCode != http.StatusOK {
			_ = res.Body.Close()
			err = fmt.Errorf("GET /api/events: %s", res.Status)
		}
		if err == nil {
			go ec.read(res.Body)
		}
	}
	if err != nil {
		ec.stop()
		ec.srv.Close()
		return nil, err
	}
	return ec, nil
}

// read counts the data lines of body until it ends.
func (ec *eventClient) read(body io.ReadCloser) {
	defer close(ec.reading)
	defer body.Close()
	br := bufio.NewReaderSize(body, 64<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && strings.HasPrefix(string(line), "data:") {
			ec.events.Add(1)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

// close disconnects the client and stops the server.
func (ec *eventClient) close() {
	ec.stop()
	<-ec.reading
	ec.srv.Close()
}

// measureSubmits connects a client to each manager's event stream, then
// in c.rounds rounds submits no-op tasks to each store in turn: in the
// first round c.warmup() untimed ones first, then in every round
// c.submits, one after the other every submitEvery, each timed. It keeps
// the medians of the rounds' p50 and p99, and checks that every task ended
// and that the clients read events.
func (c *config) measureSubmits(ctx context.Context, name string, xs []*sized) error {
	clients := make([]*eventClient, len(xs))
	for i, x := range xs {
		ec, err := listen(ctx, x.mgr)
		if err != nil {
			return err
		}
		defer ec.close()
		clients[i] = ec
	}
	runtime.GC()
	p50s, p99s := make([][]time.Duration, len(xs)), make([][]time.Duration, len(xs))
	maxes := make([]time.Duration, len(xs))
	tick := time.NewTicker(submitEvery)
	defer tick.Stop()
	for round := range c.rounds {
		for j, x := range xs {
			took := make([]time.Duration, 0, c.submits)
			warm := 0
			if round == 0 {
				warm = c.warmup()
			}
			for i := range warm + c.submits {
				<-tick.C
				began := time.Now()
				if _, err := x.mgr.Submit(ctx, noopModule, map[string]any{"i": i}); err != nil {
					return err
				}
				if i >= warm {
					took = append(took, time.Since(began))
				}
			}
			slices.Sort(took)
			p50s[j] = append(p50s[j], took[len(took)/2])
			p99s[j] = append(p99s[j], took[min(len(took)-1, len(took)*99/100)])
			maxes[j] = max(maxes[j], took[len(took)-1])
		}
	}
	for j, x := range xs {
		want := int64(c.warmup() + c.rounds*c.submits)
		deadline := time.Now().Add(2 * time.Minute)
		for x.ended.Load() < want {
			if time.Now().After(deadline) {
				return fmt.Errorf("%d records: %d of %d tasks ended after 2 minutes", x.n, x.ended.Load(), want)
			}
			time.Sleep(5 * time.Millisecond)
		}
		// Let the last batch of events out (they are sent every 50 ms).
		for wait := time.Now().Add(2 * time.Second); clients[j].events.Load() == 0 && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond)
		x.r.submits = c.rounds * c.submits
		x.r.submitP50, x.r.submitP99 = medianDuration(p50s[j]), medianDuration(p99s[j])
		x.r.events = clients[j].events.Load()
		if x.r.events == 0 {
			return fmt.Errorf("%d records: the event client read no event", x.n)
		}
		c.logf("  %-8s %9d Submit: p50 %v, p99 %v (rounds: %v), max %v; %d events read\n", name, x.n,
			x.r.submitP50.Round(time.Microsecond), x.r.submitP99.Round(time.Microsecond), roundAll(p99s[j]), maxes[j].Round(time.Microsecond), x.r.events)
	}
	return nil
}

// roundAll rounds ds to the microsecond, for printing.
func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Microsecond)
	}
	return out
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

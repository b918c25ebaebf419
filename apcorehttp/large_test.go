package apcorehttp_test

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
	"github.com/chromedp/chromedp"
)

const largeN = 100_000

// largeStore returns a MemoryStore holding n finished records of four
// modules over the last ten minutes, a few of them failed or cancelled.
func largeStore(t testing.TB, n int) *apcore.MemoryStore {
	t.Helper()
	store := apcore.NewMemoryStore()
	now := time.Now()
	ctx := context.Background()
	statuses := []apcore.TaskStatus{apcore.StatusCompleted, apcore.StatusCompleted, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled}
	for i := range n {
		sub := now.Add(-10 * time.Minute).Add(time.Duration(i) * (10 * time.Minute) / time.Duration(n))
		info := apcore.TaskInfo{
			TaskID:      fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			ModuleID:    []string{"email.send", "image.resize", "invoice.render", "report.build"}[i%4],
			Status:      statuses[i%len(statuses)],
			SubmittedAt: sub,
			StartedAt:   sub.Add(20 * time.Millisecond),
			CompletedAt: sub.Add(120 * time.Millisecond),
		}
		switch info.Status {
		case apcore.StatusCompleted:
			info.Result = map[string]any{"n": i}
		case apcore.StatusFailed:
			info.Error, info.ErrorCode = "boom", apcore.CodeModuleExecuteError
		}
		if err := store.Save(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	return store
}

func timeGet(t *testing.T, url string) (time.Duration, int) {
	t.Helper()
	start := time.Now()
	res, err := http.Get(url)
	must(t, err)
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	must(t, err)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, res.StatusCode, body)
	}
	return time.Since(start), len(body)
}

// With 100,000 records the paged API answers from the shared snapshot:
// one List a second at most, then each page is a slice of it.
func TestLargeStore(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store with 100,000 records")
	}
	store := largeStore(t, largeN)
	mgr := newManager(t, quick, apcore.WithStore(store))
	srv, _ := serve(t, mgr)

	cold, _ := timeGet(t, srv.URL+"/api/tasks?order=desc&limit=50")
	warm, size := timeGet(t, srv.URL+"/api/tasks?order=desc&limit=50")
	filterCold, _ := timeGet(t, srv.URL+"/api/tasks?order=desc&limit=50&status=failed&module=email.send")
	filterWarm, _ := timeGet(t, srv.URL+"/api/tasks?order=desc&limit=50&status=failed&module=email.send&offset=50")
	summary, _ := timeGet(t, srv.URL+"/api/summary")
	start := time.Now()
	for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning} {
		_, err := mgr.List(context.Background(), st)
		must(t, err)
	}
	poll := time.Since(start)
	full, fullSize := timeGet(t, srv.URL+"/api/tasks")
	t.Logf("100,000 records: first page %v (cold: List and snapshot), next %v (%d bytes); filtered page %v cold, %v warm; summary %v; one poll of the active records %v; the unpaged list %v (%.1f MB)",
		cold.Round(time.Millisecond), warm.Round(time.Microsecond), size, filterCold.Round(time.Millisecond), filterWarm.Round(time.Microsecond),
		summary.Round(time.Microsecond), poll.Round(time.Millisecond), full.Round(time.Millisecond), float64(fullSize)/1e6)
	if warm > 500*time.Millisecond || filterWarm > 500*time.Millisecond {
		t.Errorf("a page from the snapshot took %v / %v; want it well under a second", warm, filterWarm)
	}
}

// The page in the browser with 100,000 records: time until the first page
// of the table and the counts are drawn.
func TestBrowserLargeStore(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a store with 100,000 records")
	}
	store := largeStore(t, largeN)
	mgr := newManager(t, quick, apcore.WithStore(store))
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	srv := newServer(t, h)
	bctx, problems := browser(t)
	must(t, chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800)))
	start := time.Now()
	must(t, chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")))
	must(t, waitJS(bctx, `document.querySelectorAll("#rows tr").length === 50 && document.getElementById("count-total").textContent === (100000).toLocaleString() && document.body.dataset.live === "1"`))
	load := time.Since(start)
	// Paging to the next page, and filtering.
	start = time.Now()
	must(t, click(bctx, "#next"))
	must(t, waitJS(bctx, `document.getElementById("range").textContent.startsWith("51–100")`))
	next := time.Since(start)
	start = time.Now()
	must(t, click(bctx, `.count[data-status="failed"]`))
	must(t, waitJS(bctx, `document.getElementById("range").textContent.endsWith("of "+(20000).toLocaleString()) && document.querySelector("#rows tr").dataset.status === "failed"`))
	filter := time.Since(start)
	t.Logf("100,000 records in the browser: page loaded and live in %v, next page %v, status filter %v",
		load.Round(time.Millisecond), next.Round(time.Millisecond), filter.Round(time.Millisecond))
	if load > 5*time.Second {
		t.Errorf("the page took %v to load", load)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors: %v", p)
	}
}

// historyStore returns a MemoryStore holding n finished records spread
// over the last span, with varied modules, outcomes, queue waits and run
// times: a plausible past for the page and its chart.
func historyStore(t *testing.T, n int, span time.Duration) *apcore.MemoryStore {
	t.Helper()
	store := apcore.NewMemoryStore()
	now := time.Now().Add(-2 * time.Second)
	modules := []string{"email.send", "image.resize", "invoice.render", "report.build", "video.encode"}
	for i := range n {
		sub := now.Add(-span).Add(time.Duration(i) * span / time.Duration(n))
		wave := (1 + math.Sin(float64(i)/25)) / 2
		wait := time.Duration(float64(50*time.Millisecond) + wave*float64(1500*time.Millisecond))
		run := time.Duration(100+(i*37)%900) * time.Millisecond
		info := apcore.TaskInfo{
			TaskID:      fmt.Sprintf("%08x-%04x-4000-8000-%012x", i*2654435761%(1<<32), i%65536, i),
			ModuleID:    modules[(i*7)%len(modules)],
			Status:      apcore.StatusCompleted,
			SubmittedAt: sub,
			StartedAt:   sub.Add(wait),
			CompletedAt: sub.Add(wait + run),
			Result:      map[string]any{"ok": true, "n": i},
			Progress:    100,
		}
		switch {
		case i%11 == 3:
			info.Status, info.Result, info.Progress = apcore.StatusFailed, nil, 0
			info.Error, info.ErrorCode = "upstream: connection refused", apcore.CodeModuleExecuteError
			info.RetryCount, info.MaxRetries = 2, 2
		case i%29 == 5:
			info.Status, info.Result, info.Progress = apcore.StatusCancelled, nil, 35
		}
		if err := store.Save(context.Background(), info); err != nil {
			t.Fatal(err)
		}
	}
	return store
}

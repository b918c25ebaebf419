package apcorehttp_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath is Debian's chromium, which scripts/test.sh installs.
const chromiumPath = "/usr/bin/chromium"

// browser starts a headless Chromium for the test and returns a tab's
// context and a function returning the console errors and exceptions seen
// so far. The browser stops when the test ends.
func browser(t *testing.T) (context.Context, func() []string) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the browser test needs Chromium at %s (%v): run scripts/test.sh, which installs it (apt-get install -y chromium)", chromiumPath, err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancelTab()
		cancelAlloc()
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	var mu sync.Mutex
	var problems []string
	messages := chromedp.Console(ctx)
	listening := make(chan struct{})
	go func() {
		defer close(listening)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				problems = append(problems, m.String()+" "+m.URL)
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for the browser process to exit
		<-listening
	})
	return ctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), problems...)
	}
}

// waitJS polls a JavaScript expression until it is true.
func waitJS(ctx context.Context, expr string) error {
	_, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingInterval(10*time.Millisecond), chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		return fmt.Errorf("waiting for %s: %w", expr, err)
	}
	return nil
}

// evalJS evaluates expr into out.
func evalJS[T any](ctx context.Context, expr string, out *T) error {
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	*out = v
	return err
}

// click clicks the first element matching the CSS selector.
func click(ctx context.Context, sel string) error {
	return chromedp.Do(ctx, chromedp.Click(chromedp.CSS(sel)))
}

// rowSel is the selector of a task's row.
func rowSel(id string) string { return fmt.Sprintf(`#rows tr[data-id=%q]`, id) }

// The page in a real browser: it loads without console errors, a task
// submitted after load appears and changes state live, its progress bar
// moves, the cancel button cancels it (its module sees ctx.Done()), values
// from records are shown as text, never run as markup; and a screenshot is
// taken for the README.
func TestBrowser(t *testing.T) {
	steps := make(chan float64)
	sawDone := make(chan struct{}, 1)
	reg := apcore.NewRegistry()
	must(t, reg.Register("report.build", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		for {
			select {
			case p := <-steps:
				if err := apcore.ReportProgress(ctx, p, fmt.Sprintf("step at %v%%", p)); err != nil {
					return nil, err
				}
			case <-ctx.Done():
				sawDone <- struct{}{}
				return nil, ctx.Err()
			}
		}
	})))
	const evilText = `<script>window.__xss=1</script><img src=x onerror="window.__xss=2">"'&amp;`
	must(t, reg.Register("xss.result", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return map[string]any{"html": evilText}, nil
	})))
	must(t, reg.Register("xss.error", apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
		return nil, apcore.Permanent(errors.New(evilText))
	})))
	for _, m := range []string{"email.send", "image.resize", "invoice.render"} {
		must(t, reg.Register(m, apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
			return map[string]any{"ok": true, "module": m}, nil
		})))
	}
	must(t, reg.Register("video.encode", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
		if err := apcore.ReportProgress(ctx, 40, "encoding 1080p"); err != nil {
			return nil, err
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})))
	// Five minutes of history, for the table and the chart.
	// The store fails the test if the page makes the handler list every
	// record.
	store := newCountingStore(t, historyStore(t, 300, 5*time.Minute))
	mgr := newManager(t, reg, apcore.WithMaxConcurrent(4), apcore.WithStore(store))
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	mux := http.NewServeMux()
	mux.Handle("/ops/tasks/", http.StripPrefix("/ops/tasks", h))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close) // after the browser has closed its event stream

	bctx, problems := browser(t)
	ctx := context.Background()

	must(t, chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800), chromedp.Navigate(srv.URL+"/ops/tasks/")))
	must(t, waitJS(bctx, `document.body.dataset.live === "1" && document.querySelectorAll("#rows tr").length === 50 && document.getElementById("count-total").textContent === "300"`))

	// A task submitted after load appears, and runs.
	submitted := time.Now()
	id, err := mgr.Submit(ctx, "report.build", nil)
	must(t, err)
	must(t, waitJS(bctx, fmt.Sprintf(`(() => { const r = document.querySelector(%q); return r !== null && r.dataset.status === "running"; })()`, rowSel(id))))
	t.Logf("a task submitted after load shows running after %v", time.Since(submitted).Round(time.Millisecond))

	// Its progress bar moves with each report.
	for _, p := range []float64{30, 65} {
		sent := time.Now()
		steps <- p
		must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.getAttribute("aria-valuenow") === "%v"`, rowSel(id)+" .progress", p)))
		lat := time.Since(sent)
		t.Logf("progress %v%% showed after %v", p, lat.Round(time.Millisecond))
		if lat > time.Second {
			t.Errorf("progress took %v to show; want within a second", lat)
		}
	}

	// The detail panel shows the record, with its progress and message,
	// also when the record it fetches is older than the last event (the
	// store gets progress a moment later than the page).
	must(t, click(bctx, rowSel(id)+" td.module"))
	must(t, waitJS(bctx, fmt.Sprintf(`document.getElementById("detail").dataset.fetched === %q`, id)))
	must(t, waitJS(bctx, `!document.getElementById("detail").hidden && document.getElementById("d-progress-msg").textContent === "step at 65%"`))

	must(t, click(bctx, "#d-close"))

	// The screenshot for the README: a running task with progress, history.
	for i := range 4 {
		id, err := mgr.Submit(ctx, []string{"email.send", "image.resize"}[i%2], nil)
		must(t, err)
		_, err = mgr.Wait(ctx, id)
		must(t, err)
	}
	video, err := mgr.Submit(ctx, "video.encode", nil)
	must(t, err)
	must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.getAttribute("aria-valuenow") === "40" && document.getElementById("count-total").textContent === "306"`, rowSel(video)+" .progress")))
	// The counts above came with a refresh of the table: it kept the
	// newest progress of the first task, not an older stored one.
	var kept string
	must(t, evalJS(bctx, fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-valuenow")`, rowSel(id)+" .progress"), &kept))
	if kept != "65" {
		t.Errorf("after a refresh the first task's progress bar shows %s%%, want 65%%", kept)
	}
	checkChartScale(t, bctx, srv.URL+"/ops/tasks/api/summary")
	shot := screenshot(t, bctx, 1280, 800)
	if len(shot) > 300<<10 {
		t.Errorf("the screenshot is %d bytes; keep docs/dashboard.png under 300 KB", len(shot))
	}
	// The screenshot goes to docs/dashboard.png, a tracked file, only when
	// asked for; otherwise to the test's own folder, and the tracked file
	// must be left as it was.
	tracked := filepath.Join("..", "docs", "dashboard.png")
	before, _ := os.ReadFile(tracked)
	shotPath := filepath.Join(t.TempDir(), "dashboard.png")
	if os.Getenv("APCORE_UPDATE_SCREENSHOT") == "1" {
		shotPath = tracked
	}
	must(t, os.WriteFile(shotPath, shot, 0o644))
	if after, _ := os.ReadFile(tracked); shotPath != tracked && !bytes.Equal(before, after) {
		t.Errorf("the test rewrote %s without APCORE_UPDATE_SCREENSHOT=1", tracked)
	}
	t.Logf("screenshot: %s (APCORE_UPDATE_SCREENSHOT=1 writes %s)", shotPath, tracked)
	if dir := os.Getenv("APCOREHTTP_SHOTS"); dir != "" {
		must(t, os.WriteFile(filepath.Join(dir, "laptop.png"), shot, 0o644))
		phone := screenshot(t, bctx, 390, 844)
		must(t, os.WriteFile(filepath.Join(dir, "phone.png"), phone, 0o644))
		must(t, click(bctx, rowSel(id)+" td.module"))
		must(t, waitJS(bctx, `!document.getElementById("detail").hidden`))
		must(t, os.WriteFile(filepath.Join(dir, "phone-detail.png"), screenshot(t, bctx, 390, 844), 0o644))
		must(t, click(bctx, "#d-close"))
		dark := emulation.SetEmulatedMediaParams{Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}
		_, err := chromedp.Call(bctx, emulation.SetEmulatedMedia, dark)
		must(t, err)
		must(t, os.WriteFile(filepath.Join(dir, "laptop-dark.png"), screenshot(t, bctx, 1280, 800), 0o644))
		_, err = chromedp.Call(bctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{})
		must(t, err)
		must(t, chromedp.Do(bctx, chromedp.EmulateViewport(1280, 800)))
	}

	// XSS: records carrying markup are shown as text.
	xssRes, err := mgr.Submit(ctx, "xss.result", nil)
	must(t, err)
	xssErr, err := mgr.Submit(ctx, "xss.error", nil)
	must(t, err)
	xssID, err := mgr.Submit(ctx, `evil<script>window.__xss=3</script>"'`, nil)
	must(t, err)
	for _, x := range []string{xssRes, xssErr, xssID} {
		_, err := mgr.Wait(ctx, x)
		must(t, err)
		must(t, waitJS(bctx, fmt.Sprintf(`(() => { const r = document.querySelector(%q); return r !== null && (r.dataset.status === "completed" || r.dataset.status === "failed"); })()`, rowSel(x))))
	}
	var moduleText string
	must(t, evalJS(bctx, fmt.Sprintf(`document.querySelector(%q).textContent`, rowSel(xssID)+" td.module"), &moduleText))
	if moduleText != `evil<script>window.__xss=3</script>"'` {
		t.Errorf("module cell shows %q, want the id as text", moduleText)
	}
	must(t, click(bctx, rowSel(xssRes)+" td.module"))
	must(t, waitJS(bctx, `!document.getElementById("d-result-box").hidden && document.getElementById("d-result").textContent.includes("window.__xss=1")`))
	var resultText string
	must(t, evalJS(bctx, `JSON.parse(document.getElementById("d-result").textContent).html`, &resultText))
	if resultText != evilText {
		t.Errorf("result panel shows %q, want %q as text", resultText, evilText)
	}
	must(t, click(bctx, rowSel(xssErr)+" td.module"))
	must(t, waitJS(bctx, `!document.getElementById("d-error-box").hidden`))
	var errorText string
	must(t, evalJS(bctx, `document.getElementById("d-error").textContent`, &errorText))
	if !strings.Contains(errorText, evilText) {
		t.Errorf("error panel shows %q, want it to contain %q as text", errorText, evilText)
	}
	var injected struct {
		XSS     bool `json:"xss"`
		Scripts int  `json:"scripts"`
		Images  int  `json:"images"`
	}
	must(t, evalJS(bctx, `({xss: window.__xss !== undefined, scripts: document.scripts.length, images: document.images.length})`, &injected))
	if injected.XSS || injected.Scripts != 1 || injected.Images != 0 {
		t.Errorf("markup from records ran or entered the page: %+v", injected)
	}
	must(t, click(bctx, "#d-close"))

	// The row's cancel button cancels the running task: the module sees
	// ctx.Done() and the row shows cancelled.
	clicked := time.Now()
	must(t, click(bctx, rowSel(id)+" button.cancel"))
	select {
	case <-sawDone:
		t.Logf("the module saw ctx.Done() %v after the click", time.Since(clicked).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatal("the module never saw ctx.Done() after the cancel button was clicked")
	}
	must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.dataset.status === "cancelled"`, rowSel(id))))
	if info, err := mgr.Status(ctx, id); err != nil || info.Status != apcore.StatusCancelled {
		t.Errorf("after the click: %+v, %v; want cancelled", info, err)
	}

	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}
	if full, by := store.full.Load(), store.byStatus.Load(); full != 0 || by != 0 {
		t.Errorf("serving the page listed the store: %d times whole, %d by state", full, by)
	}
	store.strict.Store(false) // Shutdown is the core's business
}

// checkChartScale checks the chart's y axes: labelled ticks from 0 up to
// a round value at or just above the highest finished/s bar, and the same
// for the queue wait.
func checkChartScale(t *testing.T, ctx context.Context, summaryURL string) {
	t.Helper()
	var sum struct {
		Chart struct {
			BucketSeconds float64   `json:"bucket_seconds"`
			Finished      []int     `json:"finished"`
			WaitAvg       []float64 `json:"wait_avg"`
		} `json:"chart"`
	}
	if code := get(t, summaryURL, &sum); code != 200 {
		t.Fatalf("GET %s: %d", summaryURL, code)
	}
	maxRate, maxWait := 1.0, 0.5 // the page's floors
	for i, n := range sum.Chart.Finished {
		maxRate = max(maxRate, float64(n)/sum.Chart.BucketSeconds)
		maxWait = max(maxWait, sum.Chart.WaitAvg[i])
	}
	for _, axis := range []struct {
		sel, unit string
		peak      float64
	}{{"#chart-y-rate", "/s", maxRate}, {"#chart-y-wait", " s", maxWait}} {
		var ticks []struct {
			Value float64 `json:"value"`
			Text  string  `json:"text"`
			Top   float64 `json:"top"`
		}
		// The chart is redrawn with each refresh: wait for one drawn from
		// this summary or a later one (the peak only grows in this test).
		must(t, waitJS(ctx, fmt.Sprintf(`(() => { const t = [...document.querySelectorAll(%q)]; return t.length >= 3 && +t[t.length-1].dataset.value >= %v; })()`, axis.sel+" .tick", axis.peak)))
		must(t, evalJS(ctx, fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => ({value: +e.dataset.value, text: e.textContent, top: e.getBoundingClientRect().top}))`, axis.sel+" .tick"), &ticks))
		if len(ticks) < 3 || len(ticks) > 6 || ticks[0].Value != 0 || ticks[0].Text != "0" {
			t.Fatalf("%s: ticks %+v, want 3-6 from 0", axis.sel, ticks)
		}
		for i := 1; i < len(ticks); i++ {
			if ticks[i].Value <= ticks[i-1].Value || ticks[i].Top >= ticks[i-1].Top || !strings.HasSuffix(ticks[i].Text, axis.unit) {
				t.Errorf("%s: tick %d %+v after %+v: want a higher value, drawn higher, labelled in %q", axis.sel, i, ticks[i], ticks[i-1], axis.unit)
			}
		}
		if top := ticks[len(ticks)-1].Value; top < axis.peak || top > 2.5*axis.peak {
			t.Errorf("%s: the scale ends at %v for a peak of %v", axis.sel, top, axis.peak)
		}
	}
}

// screenshot takes a PNG of the viewport at w x h and checks that it is
// not blank: a page that failed to render is one or two colours.
func screenshot(t *testing.T, ctx context.Context, w, h int64) []byte {
	t.Helper()
	var opts []chromedp.EmulateViewportOption
	if w < 600 {
		opts = append(opts, chromedp.EmulateMobile, chromedp.EmulateTouch)
	}
	must(t, chromedp.Do(ctx, chromedp.EmulateViewport(w, h, opts...)))
	// Wait for a frame drawn at the new size.
	must(t, waitJS(ctx, fmt.Sprintf("window.innerWidth === %d", w)))
	buf, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	must(t, err)
	img, err := png.Decode(bytes.NewReader(buf))
	must(t, err)
	if n := distinctColours(img); n < 50 {
		t.Fatalf("the %dx%d screenshot has %d distinct colours: it looks blank", w, h, n)
	}
	return buf
}

func distinctColours(img image.Image) int {
	seen := map[[4]uint32]struct{}{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = struct{}{}
		}
	}
	return len(seen)
}

// Under ReadOnly the page shows no cancel button, in the table or in a
// running task's detail.
func TestBrowserReadOnly(t *testing.T) {
	g := newGate()
	mgr := newManager(t, g)
	h, err := apcorehttp.NewHandler(mgr, apcorehttp.ReadOnly())
	must(t, err)
	srv := newServer(t, h)
	bctx, problems := browser(t)
	must(t, chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")))
	must(t, waitJS(bctx, `document.body.dataset.live === "1"`))
	id, err := mgr.Submit(context.Background(), "slow", nil)
	must(t, err)
	<-g.started
	must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.dataset.status === "running"`, rowSel(id))))
	must(t, click(bctx, rowSel(id)+" td.module"))
	must(t, waitJS(bctx, fmt.Sprintf(`document.getElementById("detail").dataset.fetched === %q`, id)))
	var buttons struct {
		Rows   int  `json:"rows"`
		Detail bool `json:"detail"`
	}
	must(t, evalJS(bctx, `({rows: document.querySelectorAll("button.cancel").length, detail: !document.getElementById("d-cancel").hidden})`, &buttons))
	if buttons.Rows != 0 || buttons.Detail {
		t.Errorf("read-only page shows cancel buttons: %+v", buttons)
	}
	close(g.release)
	must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.dataset.status === "completed"`, rowSel(id))))
	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors: %v", p)
	}
}

// rowIDs is an expression: the ids of the table's rows, sorted, joined by
// commas.
const rowIDs = `[...document.querySelectorAll("#rows tr")].map(r => r.dataset.id).sort().join(",")`

// sortedIDs joins ids sorted, as rowIDs does.
func sortedIDs(ids ...string) string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return strings.Join(ids, ",")
}

// Scheduled tasks in a real browser: a pending task whose run_at is in the
// future shows as scheduled with how long until its time (the time itself
// as the tooltip), also when it is submitted after the page loaded; it
// shows its state once its time has come; the detail view shows its time,
// priority and unique key (a hostile key as text); the status filter's
// "scheduled" and the unique-key field (exact, a hostile key too) filter
// the table through the server.
func TestBrowserScheduled(t *testing.T) {
	// A key typed by a user: markup, quotes, an ampersand, URL syntax.
	const evilKey = `<img src=x onerror="window.__xss=5">'&amp;?k=1#x`
	reg := apcore.NewRegistry()
	for _, m := range []string{"email.send", "report.later"} {
		must(t, reg.Register(m, apcore.ModuleFunc(func(context.Context, map[string]any) (any, error) {
			return "ok", nil
		})))
	}
	store := newCountingStore(t, apcore.NewMemoryStore())
	mgr := newManager(t, reg, apcore.WithStore(store))
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	srv := newServer(t, h)
	ctx := context.Background()
	var done []string
	for range 3 {
		id, err := mgr.Submit(ctx, "email.send", nil, apcore.WithUniqueKey(fmt.Sprintf("mail-%d", len(done))))
		must(t, err)
		_, err = mgr.Wait(ctx, id)
		must(t, err)
		done = append(done, id)
	}
	runAt := time.Now().Add(5*time.Minute + 20*time.Second)
	evil, err := mgr.Submit(ctx, "report.later", nil, apcore.WithRunAt(runAt), apcore.WithUniqueKey(evilKey), apcore.WithPriority(7))
	must(t, err)

	bctx, problems := browser(t)
	must(t, chromedp.Do(bctx, chromedp.Navigate(srv.URL+"/")))
	must(t, waitJS(bctx, fmt.Sprintf(`document.body.dataset.live === "1" && %s === %q`, rowIDs, sortedIDs(append(done, evil)...))))

	// Shown as scheduled, with its time.
	type shownRow struct {
		Status string `json:"status"`
		Shown  string `json:"shown"`
		Badge  string `json:"badge"`
		When   string `json:"when"`
		Title  string `json:"title"`
		Want   string `json:"want"`
	}
	row := func(id string, at time.Time) shownRow {
		t.Helper()
		var r shownRow
		must(t, evalJS(bctx, fmt.Sprintf(`(() => { const r = document.querySelector(%q); const w = r.querySelector(".when");
			return {status: r.dataset.status, shown: r.dataset.shown, badge: r.querySelector(".badge").textContent,
				when: w.textContent, title: w.title, want: new Date(%d).toLocaleString()}; })()`, rowSel(id), at.UnixMilli()), &r))
		return r
	}
	if r := row(evil, runAt); r.Status != "pending" || r.Shown != "scheduled" || r.Badge != "scheduled" || r.When != "in 5 min" || r.Title != r.Want {
		t.Errorf("a task scheduled 5 min 20 s ahead shows %+v; want the badge scheduled, \"in 5 min\" and the time as the tooltip", r)
	}
	// Submitted after the page loaded: the event brings it as scheduled.
	laterAt := time.Now().Add(3 * time.Hour)
	later, err := mgr.Submit(ctx, "report.later", nil, apcore.WithRunAt(laterAt))
	must(t, err)
	must(t, waitJS(bctx, fmt.Sprintf(`document.querySelector(%q)?.dataset.shown === "scheduled"`, rowSel(later))))
	if r := row(later, laterAt); r.When != "in 3 h" || r.Title != r.Want {
		t.Errorf("a task scheduled 3 h ahead, submitted after load, shows %+v", r)
	}
	// A time that comes while the page is open: scheduled, then run.
	soon, err := mgr.Submit(ctx, "report.later", nil, apcore.WithDelay(4*time.Second))
	must(t, err)
	must(t, waitJS(bctx, fmt.Sprintf(`(() => { const r = document.querySelector(%q); return r?.dataset.shown === "scheduled" && /^in [1-4] s$/.test(r.querySelector(".when").textContent); })()`, rowSel(soon))))
	must(t, waitJS(bctx, fmt.Sprintf(`(() => { const r = document.querySelector(%q); return r?.dataset.shown === "completed" && r.querySelector(".badge").textContent === "completed" && r.querySelector(".when").textContent === ""; })()`, rowSel(soon))))

	// The detail view: its time, priority and unique key, as text.
	must(t, click(bctx, rowSel(evil)+" td.module"))
	must(t, waitJS(bctx, fmt.Sprintf(`document.getElementById("detail").dataset.fetched === %q`, evil)))
	var fields map[string]string
	must(t, evalJS(bctx, `(() => { const out = {status: document.getElementById("d-status").textContent};
		for (const dt of document.querySelectorAll("#d-fields dt")) out[dt.textContent] = dt.nextElementSibling.textContent;
		return out; })()`, &fields))
	var wantAt string
	must(t, evalJS(bctx, fmt.Sprintf(`new Date(%d).toLocaleString()`, runAt.UnixMilli()), &wantAt))
	if dir := os.Getenv("APCOREHTTP_SHOTS"); dir != "" {
		must(t, os.WriteFile(filepath.Join(dir, "scheduled-detail.png"), screenshot(t, bctx, 1280, 800), 0o644))
	}
	if fields["status"] != "scheduled" || fields["Run at"] != wantAt+" (in 5 min)" || fields["Priority"] != "7" || fields["Unique key"] != evilKey {
		t.Errorf("the detail view of the scheduled task: %v; want scheduled, run at %q (in 5 min), priority 7, unique key %q", fields, wantAt, evilKey)
	}
	must(t, click(bctx, "#d-close"))

	// The status filter's "scheduled": the server's filter.
	must(t, chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#f-status"), "scheduled")))
	must(t, evalJS(bctx, `document.getElementById("f-status").dispatchEvent(new Event("change")), true`, new(bool)))
	must(t, waitJS(bctx, fmt.Sprintf(`%s === %q`, rowIDs, sortedIDs(evil, later))))
	var rangeText string
	must(t, evalJS(bctx, `document.getElementById("range").textContent`, &rangeText))
	if rangeText != "1–2" {
		t.Errorf("the scheduled filter's range reads %q, want 1–2 (no count of the state's)", rangeText)
	}

	// The unique key, typed and entered: exact, through the server; with
	// the status filter too.
	must(t, chromedp.Do(bctx, chromedp.SendKeys(chromedp.CSS("#f-key"), evilKey+kb.Enter)))
	must(t, waitJS(bctx, fmt.Sprintf(`%s === %q`, rowIDs, evil)))
	must(t, chromedp.Do(bctx, chromedp.SetValue(chromedp.CSS("#f-status"), "")))
	must(t, evalJS(bctx, `document.getElementById("f-status").dispatchEvent(new Event("change")), true`, new(bool)))
	must(t, waitJS(bctx, fmt.Sprintf(`%s === %q && document.getElementById("f-key").value === %q`, rowIDs, evil, evilKey)))
	setKey := func(k string) {
		t.Helper()
		must(t, evalJS(bctx, fmt.Sprintf(`document.getElementById("f-key").value = %q, true`, k), new(bool)))
		must(t, chromedp.Do(bctx, chromedp.SendKeys(chromedp.CSS("#f-key"), kb.Enter)))
	}
	setKey("mail-1")
	must(t, waitJS(bctx, fmt.Sprintf(`%s === %q`, rowIDs, done[1])))
	setKey("mail-")
	must(t, waitJS(bctx, fmt.Sprintf(`%s === "" && !document.getElementById("empty").hidden`, rowIDs)))
	setKey("")
	must(t, waitJS(bctx, fmt.Sprintf(`%s === %q`, rowIDs, sortedIDs(append(done, evil, later, soon)...))))

	var injected struct {
		XSS    bool `json:"xss"`
		Images int  `json:"images"`
	}
	must(t, evalJS(bctx, `({xss: window.__xss !== undefined, images: document.images.length})`, &injected))
	if injected.XSS || injected.Images != 0 {
		t.Errorf("markup from a unique key ran or entered the page: %+v", injected)
	}
	if p := problems(); len(p) > 0 {
		t.Errorf("the page logged errors:\n%s", strings.Join(p, "\n"))
	}
	if full, by := store.full.Load(), store.byStatus.Load(); full != 0 || by != 0 {
		t.Errorf("serving the page listed the store: %d times whole, %d by state", full, by)
	}
	store.strict.Store(false)
	_, err = mgr.Cancel(ctx, later)
	must(t, err)
	_, err = mgr.Cancel(ctx, evil)
	must(t, err)
}

package apcorehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
	"go.uber.org/goleak"
)

// gate is a module that waits until released (or cancelled).
type gate struct {
	started chan string
	release chan struct{}
	done    chan string // the task ids whose module saw ctx.Done()
}

func newGate() *gate {
	return &gate{started: make(chan string, 100), release: make(chan struct{}), done: make(chan string, 100)}
}

func (g *gate) Call(ctx context.Context, moduleID string, inputs map[string]any) (any, error) {
	info, _ := apcore.TaskFromContext(ctx)
	g.started <- info.TaskID
	select {
	case <-g.release:
		return map[string]any{"module": moduleID, "in": inputs["n"]}, nil
	case <-ctx.Done():
		g.done <- info.TaskID
		return nil, ctx.Err()
	}
}

// quick is an executor that returns at once.
var quick = apcore.ExecutorFunc(func(ctx context.Context, moduleID string, inputs map[string]any) (any, error) {
	if moduleID == "fail" {
		return nil, apcore.Permanent(fmt.Errorf("failed on purpose"))
	}
	if moduleID == "pad" {
		return strings.Repeat("p", 4000), nil
	}
	return inputs["n"], nil
})

func serve(t *testing.T, mgr *apcore.TaskManager, opts ...apcorehttp.Option) (*httptest.Server, http.Handler) {
	t.Helper()
	h, err := apcorehttp.NewHandler(mgr, opts...)
	must(t, err)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv, h
}

func get(t *testing.T, url string, out any) int {
	t.Helper()
	res, err := http.Get(url)
	must(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	must(t, err)
	if out != nil && res.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("GET %s: %v in %s", url, err, body)
		}
	}
	return res.StatusCode
}

func submitN(t *testing.T, mgr *apcore.TaskManager, module string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id, err := mgr.Submit(context.Background(), module, map[string]any{"n": i})
		must(t, err)
		_, err = mgr.Wait(context.Background(), id)
		must(t, err)
		ids = append(ids, id)
	}
	return ids
}

// GET /api/tasks is a page of the store in the wire format, in insertion
// order, and filters by status; the paging parameters page it.
func TestListTasks(t *testing.T) {
	mgr := newManager(t, quick)
	srv, _ := serve(t, mgr)
	a := submitN(t, mgr, "alpha", 3)
	f := submitN(t, mgr, "fail", 2)
	b := submitN(t, mgr, "beta", 2)

	res, err := http.Get(srv.URL + "/api/tasks")
	must(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	list, err := mgr.ListPage(context.Background(), apcore.ListOptions{})
	must(t, err)
	want, err := json.Marshal(map[string]any{"tasks": list.Tasks})
	must(t, err)
	if strings.TrimSpace(string(body)) != string(want) || res.Header.Get("Link") != "" {
		t.Errorf("GET /api/tasks:\n got %s (Link %q)\nwant %s", body, res.Header.Get("Link"), want)
	}

	var got page
	ids := got.ids
	getP := func(q string) {
		t.Helper()
		got, _ = getPage(t, srv.URL+"/api/tasks?"+q)
		ids = got.ids
	}
	intOf := func(p *int) int {
		if p == nil {
			return -1
		}
		return *p
	}
	if getP("status=failed"); !reflect.DeepEqual(ids(), f) || got.Total != nil || got.Next != nil {
		t.Errorf("status=failed: %v (total %v, next %v), want %v and no total (the summary counts)", ids(), intOf(got.Total), got.Next, f)
	}
	if getP("status=running"); len(got.Tasks) != 0 {
		t.Errorf("status=running: %v, want an empty list", got.Tasks)
	}
	all := append(append(append([]string{}, a...), f...), b...)
	if getP("order=desc&limit=3"); !reflect.DeepEqual(ids(), []string{all[6], all[5], all[4]}) || got.Next == nil {
		t.Errorf("order=desc&limit=3: %v total %v", ids(), intOf(got.Total))
	}
	if getP("order=desc&limit=3&after=" + url.QueryEscape(*got.Next)); !reflect.DeepEqual(ids(), []string{all[3], all[2], all[1]}) || got.Next == nil {
		t.Errorf("order=desc&limit=3, the second page: %v", ids())
	}
	if getP("order=desc&limit=3&after=" + url.QueryEscape(*got.Next)); !reflect.DeepEqual(ids(), []string{all[0]}) || got.Next != nil {
		t.Errorf("order=desc&limit=3, the last page: %v next %v", ids(), got.Next)
	}
	if getP("offset=2&limit=2"); !reflect.DeepEqual(ids(), all[2:4]) || got.Next == nil {
		t.Errorf("offset=2&limit=2: %v", ids())
	}
	if getP("limit=2&after=" + url.QueryEscape(*got.Next)); !reflect.DeepEqual(ids(), all[4:6]) {
		t.Errorf("offset=2&limit=2, then its next: %v, want %v", ids(), all[4:6])
	}
	if getP("module=alpha&order=desc&offset=1"); !reflect.DeepEqual(ids(), []string{a[1], a[0]}) || intOf(got.Scanned) != 7 {
		t.Errorf("module=alpha&order=desc&offset=1: %v total %v scanned %v", ids(), intOf(got.Total), intOf(got.Scanned))
	}
	if getP("module=beta&status=completed&limit=10"); !reflect.DeepEqual(ids(), b) {
		t.Errorf("module=beta&status=completed: %v", ids())
	}
	if getP("module=alpha&limit=2"); !reflect.DeepEqual(ids(), a[:2]) || got.Next == nil {
		t.Errorf("module=alpha&limit=2: %v next %v", ids(), got.Next)
	}
	if getP("module=alpha&limit=2&after=" + url.QueryEscape(*got.Next)); !reflect.DeepEqual(ids(), a[2:]) || got.Next != nil {
		t.Errorf("module=alpha&limit=2, the second page: %v next %v", ids(), got.Next)
	}
	if getP("offset=100&limit=10"); len(got.Tasks) != 0 || got.Next != nil {
		t.Errorf("offset past the end: %v total %v", ids(), intOf(got.Total))
	}

	var summary struct {
		Counts  map[string]int `json:"counts"`
		Modules []string       `json:"modules"`
		Chart   struct {
			Finished []int `json:"finished"`
		} `json:"chart"`
	}
	get(t, srv.URL+"/api/summary", &summary)
	if summary.Counts["completed"] != 5 || summary.Counts["failed"] != 2 || summary.Counts["total"] != 7 || !reflect.DeepEqual(summary.Modules, []string{"alpha", "beta", "fail"}) {
		t.Errorf("summary: %+v", summary)
	}
	finished := 0
	for _, n := range summary.Chart.Finished {
		finished += n
	}
	if finished != 7 {
		t.Errorf("chart: %d finished in the last minutes, want 7", finished)
	}
}

// GET /api/tasks/{id} is the record, or 404 TASK_NOT_FOUND.
func TestGetTask(t *testing.T) {
	mgr := newManager(t, quick)
	srv, _ := serve(t, mgr)
	id := submitN(t, mgr, "alpha", 1)[0]
	res, err := http.Get(srv.URL + "/api/tasks/" + id)
	must(t, err)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	info, err := mgr.Status(context.Background(), id)
	must(t, err)
	want, _ := json.Marshal(info)
	if res.StatusCode != 200 || strings.TrimSpace(string(body)) != string(want) {
		t.Errorf("GET /api/tasks/%s: %d %s, want %s", id, res.StatusCode, body, want)
	}

	res, err = http.Get(srv.URL + "/api/tasks/no-such-task")
	must(t, err)
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &e); err != nil || res.StatusCode != 404 || e.Error.Code != "TASK_NOT_FOUND" || e.Error.Message == "" {
		t.Errorf("unknown id: %d %s", res.StatusCode, body)
	}
}

func post(t *testing.T, url string, header map[string]string, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	must(t, err)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, strings.TrimSpace(string(b))
}

// Cancel is refused for what a cross-site form could send, works for the
// page's own request, and stops the module.
func TestCancel(t *testing.T) {
	g := newGate()
	mgr := newManager(t, g)
	srv, _ := serve(t, mgr)
	id, err := mgr.Submit(context.Background(), "slow", nil)
	must(t, err)
	<-g.started
	url := srv.URL + "/api/tasks/" + id + "/cancel"
	refused := []map[string]string{
		{"Content-Type": "application/x-www-form-urlencoded"},
		{"Content-Type": "text/plain"},
		{"Content-Type": "multipart/form-data; boundary=x"},
		{},
		{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
		{"Content-Type": "application/json", "Sec-Fetch-Site": "same-site"},
		{"Content-Type": "application/json", "Origin": "https://evil.example"},
		{"X-Apcore-Request": "1", "Origin": "https://evil.example"},
	}
	for _, h := range refused {
		if code, body := post(t, url, h, "a=b"); code != http.StatusForbidden {
			t.Errorf("%v: %d %s, want 403", h, code, body)
		}
	}
	if info, _ := mgr.Status(context.Background(), id); info.Status != apcore.StatusRunning {
		t.Fatalf("a refused request cancelled the task: %s", info.Status)
	}
	code, body := post(t, url, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "same-origin", "Origin": srv.URL}, "{}")
	if code != 200 || body != `{"cancelled":true}` {
		t.Errorf("same-origin cancel: %d %s", code, body)
	}
	if done := <-g.done; done != id {
		t.Errorf("the module of %s saw ctx.Done(), want %s", done, id)
	}
	code, body = post(t, url, map[string]string{"X-Apcore-Request": "1"}, "")
	if code != 200 || body != `{"cancelled":false}` {
		t.Errorf("second cancel: %d %s", code, body)
	}
	code, body = post(t, srv.URL+"/api/tasks/nope/cancel", map[string]string{"Content-Type": "application/json"}, "{}")
	if code != 404 || !strings.Contains(body, "TASK_NOT_FOUND") {
		t.Errorf("cancel of an unknown id: %d %s", code, body)
	}
}

// ReadOnly removes the cancel endpoint and the page's buttons.
func TestReadOnly(t *testing.T) {
	g := newGate()
	mgr := newManager(t, g)
	srv, _ := serve(t, mgr, apcorehttp.ReadOnly())
	id, err := mgr.Submit(context.Background(), "slow", nil)
	must(t, err)
	<-g.started
	code, _ := post(t, srv.URL+"/api/tasks/"+id+"/cancel", map[string]string{"Content-Type": "application/json"}, "{}")
	if code != http.StatusNotFound && code != http.StatusMethodNotAllowed {
		t.Errorf("cancel under ReadOnly: %d, want 404 or 405", code)
	}
	if info, _ := mgr.Status(context.Background(), id); info.Status != apcore.StatusRunning {
		t.Errorf("under ReadOnly the task was cancelled")
	}
	res, err := http.Get(srv.URL + "/")
	must(t, err)
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(page), `data-mode="ro"`) {
		t.Errorf("the page does not know it is read-only")
	}
	close(g.release)
}

// The page is served whole from the binary: no other host is named.
func TestPage(t *testing.T) {
	mgr := newManager(t, quick)
	srv, _ := serve(t, mgr)
	for path, ctype := range map[string]string{"/": "text/html", "/app.js": "javascript", "/app.css": "text/css"} {
		res, err := http.Get(srv.URL + path)
		must(t, err)
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != 200 || !strings.Contains(res.Header.Get("Content-Type"), ctype) {
			t.Errorf("GET %s: %d %s", path, res.StatusCode, res.Header.Get("Content-Type"))
		}
		if strings.Contains(string(body), "//cdn") || strings.Contains(string(body), "https://") {
			t.Errorf("%s names another host", path)
		}
		if path == "/app.js" && strings.Contains(string(body), "innerHTML") {
			t.Errorf("app.js uses innerHTML")
		}
		if path == "/" && !strings.Contains(string(body), `data-mode="rw"`) {
			t.Errorf("the page is not in read-write mode")
		}
	}
}

// events reads an event stream, sending each record on the channel; it
// ends when the stream does.
func events(t *testing.T, ctx context.Context, url string) <-chan apcore.TaskInfo {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	must(t, err)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("GET /api/events: %d %s", res.StatusCode, ct)
	}
	out := make(chan apcore.TaskInfo, 1000)
	go func() {
		defer close(out)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var info apcore.TaskInfo
			if err := json.Unmarshal([]byte(data), &info); err != nil {
				if ctx.Err() != nil {
					return // the body was cut mid-event on purpose
				}
				t.Errorf("event data %q: %v", data, err)
				return
			}
			out <- info
		}
	}()
	return out
}

// next returns the next event about id, failing after timeout.
func next(t *testing.T, ch <-chan apcore.TaskInfo, id string, timeout time.Duration) apcore.TaskInfo {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case info, ok := <-ch:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if info.TaskID == id {
				return info
			}
		case <-deadline:
			t.Fatalf("no event about %s within %v", id, timeout)
		}
	}
}

// The event stream reports the transitions and progress reports of the
// manager's tasks within a flush interval: the latest state of each task
// per batch (pending and running may come as one event), without the
// result, which the record has.
func TestEventsLocal(t *testing.T) {
	progress := make(chan float64)
	exec := apcore.ExecutorFunc(func(ctx context.Context, _ string, _ map[string]any) (any, error) {
		for p := range progress {
			must(t, apcore.ReportProgress(ctx, p, "working"))
		}
		return "done", nil
	})
	mgr := newManager(t, exec)
	srv, _ := serve(t, mgr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := events(t, ctx, srv.URL+"/api/events")

	start := time.Now()
	id, err := mgr.Submit(context.Background(), "job", nil)
	must(t, err)
	e := next(t, ch, id, time.Second)
	if e.Status == apcore.StatusPending {
		e = next(t, ch, id, time.Second)
	}
	if e.Status != apcore.StatusRunning || e.ModuleID != "job" || e.SubmittedAt.IsZero() || e.StartedAt.IsZero() {
		t.Errorf("event after Submit: %+v, want running", e)
	}
	t.Logf("running reached the client %v after Submit", time.Since(start))
	progress <- 40
	if e := next(t, ch, id, time.Second); e.Progress != 40 || e.ProgressMessage != "working" {
		t.Errorf("progress event: %+v", e)
	}
	close(progress)
	e = next(t, ch, id, time.Second)
	if e.Status != apcore.StatusCompleted || e.Result != nil || e.CompletedAt.IsZero() {
		t.Errorf("last event: %+v, want completed without the result", e)
	}
}

// replicaDashboard starts two managers over one store, the dashboard on
// one that runs nothing itself, and returns the gate of the modules, the
// other manager, the server and the dashboard's event stream.
func replicaDashboard(t *testing.T) (*gate, *apcore.TaskManager, *httptest.Server, <-chan apcore.TaskInfo) {
	store := apcore.NewMemoryStore()
	g := newGate()
	local := newManager(t, g, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	remote := newManager(t, g, apcore.WithStore(store))
	srv, _ := serve(t, local)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return g, remote, srv, events(t, ctx, srv.URL+"/api/events")
}

// Transitions of tasks run by another manager sharing the store reach the
// stream within about a second, through the poll of the active records.
func TestEventsAcrossReplicas(t *testing.T) {
	g, remote, _, ch := replicaDashboard(t)
	submitted := time.Now()
	id, err := remote.Submit(context.Background(), "remote.job", nil)
	must(t, err)
	<-g.started
	var e apcore.TaskInfo
	for e.Status != apcore.StatusRunning {
		e = next(t, ch, id, 3*time.Second)
	}
	t.Logf("another replica's task showed running %v after its Submit", time.Since(submitted))
	released := time.Now()
	close(g.release)
	if e = next(t, ch, id, 3*time.Second); e.Status != apcore.StatusCompleted {
		t.Errorf("after release: %+v, want completed", e)
	}
	lat := time.Since(released)
	t.Logf("its completion showed %v after it ended", lat)
	if lat > 2500*time.Millisecond {
		t.Errorf("the completion took %v to show; want about a second", lat)
	}
}

// A client that goes away leaves nothing behind: its handler returns, and
// after the last one the hub stops polling and unsubscribes.
func TestEventsDisconnect(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	mgr, err := apcore.NewTaskManager(quick)
	must(t, err)
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	srv := httptest.NewServer(h)

	var cancels []context.CancelFunc
	var streams []<-chan apcore.TaskInfo
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		cancels = append(cancels, cancel)
		streams = append(streams, events(t, ctx, srv.URL+"/api/events"))
	}
	if n, running := apcorehttp.HubState(h); n != 3 || !running {
		t.Fatalf("with 3 clients: %d clients, running %v", n, running)
	}
	id := submitN(t, mgr, "x", 1)[0]
	for _, s := range streams {
		next(t, s, id, time.Second)
	}
	for _, c := range cancels {
		c()
	}
	for _, s := range streams {
		for range s { // the reader ends when the body closes
		}
	}
	// Close waits for every handler to return: a handler stuck on a gone
	// client would hang it.
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the event handlers did not return after their clients left")
	}
	if n, running := apcorehttp.HubState(h); n != 0 || running {
		t.Errorf("after the clients left: %d clients, running %v", n, running)
	}
	must(t, mgr.Shutdown(context.Background()))
}

// A client too slow to read its events is dropped rather than allowed to
// hold the manager's observers back.
func TestEventsSlowClientDropped(t *testing.T) {
	mgr := newManager(t, quick)
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	srv := httptest.NewServer(h)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/api/events", nil)
	res, err := http.DefaultClient.Do(req)
	must(t, err)
	defer res.Body.Close()
	// A client that reads along is kept.
	reader := events(t, ctx, srv.URL+"/api/events")
	if n, _ := apcorehttp.HubState(h); n != 2 {
		t.Fatalf("%d clients, want 2", n)
	}
	// The other never reads: the socket buffers fill, then its queue.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ids []string
		for range 200 {
			id, err := mgr.Submit(context.Background(), "pad", nil)
			must(t, err)
			ids = append(ids, id)
		}
		for _, id := range ids {
			_, err := mgr.Wait(context.Background(), id)
			must(t, err)
		}
		last := ids[len(ids)-1]
		for e := next(t, reader, last, 5*time.Second); e.Status != apcore.StatusCompleted; e = next(t, reader, last, 5*time.Second) {
		}
		if n, _ := apcorehttp.HubState(h); n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a client that never reads was never dropped")
		}
	}
	// The reader still gets events.
	id, err := mgr.Submit(context.Background(), "x", nil)
	must(t, err)
	next(t, reader, id, 2*time.Second)
	cancel()
	for range reader {
	}
}

// TrustedOrigin lets a named other origin cancel (a proxy with its own
// public address); others stay refused; a malformed origin is an error.
func TestTrustedOrigin(t *testing.T) {
	g := newGate()
	mgr := newManager(t, g)
	srv, _ := serve(t, mgr, apcorehttp.TrustedOrigin("https://ops.example.com"))
	id, err := mgr.Submit(context.Background(), "slow", nil)
	must(t, err)
	<-g.started
	url := srv.URL + "/api/tasks/" + id + "/cancel"
	if code, _ := post(t, url, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, "{}"); code != http.StatusForbidden {
		t.Errorf("an untrusted origin: %d, want 403", code)
	}
	if code, body := post(t, url, map[string]string{"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site", "Origin": "https://ops.example.com"}, "{}"); code != 200 || body != `{"cancelled":true}` {
		t.Errorf("the trusted origin: %d %s", code, body)
	}
	<-g.done
	if _, err := apcorehttp.NewHandler(mgr, apcorehttp.TrustedOrigin("not a url")); apcore.CodeOf(err) != apcore.CodeInvalidInput {
		t.Errorf("TrustedOrigin(\"not a url\"): %v, want GENERAL_INVALID_INPUT", err)
	}
	if _, err := apcorehttp.NewHandler(nil); apcore.CodeOf(err) != apcore.CodeInvalidInput {
		t.Errorf("NewHandler(nil): %v, want GENERAL_INVALID_INPUT", err)
	}
}

// The dashboard of one replica cancels a task another replica runs: the
// module there sees ctx.Done(), and the stream shows the task cancelled.
func TestCancelAcrossReplicas(t *testing.T) {
	g, remote, srv, ch := replicaDashboard(t)
	id, err := remote.Submit(context.Background(), "remote.job", nil)
	must(t, err)
	<-g.started
	clicked := time.Now()
	code, body := post(t, srv.URL+"/api/tasks/"+id+"/cancel", map[string]string{"Content-Type": "application/json"}, "{}")
	if code != 200 || body != `{"cancelled":true}` {
		t.Fatalf("cancel through the other replica's dashboard: %d %s", code, body)
	}
	select {
	case done := <-g.done:
		if done != id {
			t.Errorf("the module of %s saw ctx.Done(), want %s", done, id)
		}
		t.Logf("the remote module saw ctx.Done() %v after the request", time.Since(clicked).Round(time.Millisecond))
	case <-time.After(3 * time.Second):
		t.Fatal("the remote module never saw ctx.Done()")
	}
	for e := next(t, ch, id, 3*time.Second); e.Status != apcore.StatusCancelled; e = next(t, ch, id, 3*time.Second) {
		t.Logf("event %s", e.Status)
	}
}

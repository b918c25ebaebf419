package apcorehttp_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

// nonFinite is an executor whose results JSON cannot encode as they are:
// NaN and infinities, alone, nested, and inside a struct.
var nonFinite = apcore.ExecutorFunc(func(ctx context.Context, moduleID string, _ map[string]any) (any, error) {
	switch moduleID {
	case "nan":
		return math.NaN(), nil
	case "inf":
		return math.Inf(1), nil
	case "nested":
		return map[string]any{"ok": 1.5, "list": []any{math.Inf(-1), "x"}, "typed": map[string]float64{"v": math.NaN()}}, nil
	case "struct":
		return struct{ V float64 }{math.NaN()}, nil
	}
	return "fine", nil
})

// wireRecord is a record as the API sends it, with the field it adds for
// a result that does not encode.
type wireRecord struct {
	TaskID      string `json:"task_id"`
	ModuleID    string `json:"module_id"`
	Status      string `json:"status"`
	Result      any    `json:"result"`
	ResultError string `json:"result_error"`
}

// getBody GETs url and returns the status and the body.
func getBody(t *testing.T, url string) (int, []byte) {
	t.Helper()
	res, err := http.Get(url)
	must(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	must(t, err)
	return res.StatusCode, body
}

// A result that JSON cannot encode (NaN, ±Inf; the memory store keeps
// them) blanks neither the list nor the record: non-finite numbers are sent
// as strings, and a result that still does not encode is left out with an
// error field for that record. The event stream reports such a task too.
func TestNonFiniteResults(t *testing.T) {
	mgr := newManager(t, nonFinite)
	srv, _ := serve(t, mgr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := events(t, ctx, srv.URL+"/api/events")

	ids := map[string]string{}
	for _, m := range []string{"fine", "nan", "inf", "nested", "struct"} {
		ids[m] = submitN(t, mgr, m, 1)[0]
	}
	want := map[string]string{
		"fine":   `"fine"`,
		"nan":    `"NaN"`,
		"inf":    `"+Inf"`,
		"nested": `{"list":["-Inf","x"],"ok":1.5,"typed":{"v":"NaN"}}`,
		"struct": `null`,
	}
	check := func(what string, recs []wireRecord) {
		t.Helper()
		if len(recs) != len(want) {
			t.Errorf("%s: %d records, want %d", what, len(recs), len(want))
		}
		for _, r := range recs {
			got, _ := json.Marshal(r.Result)
			if string(got) != want[r.ModuleID] || r.Status != "completed" || r.TaskID != ids[r.ModuleID] {
				t.Errorf("%s: %s: %s result %s, want completed %s", what, r.ModuleID, r.Status, got, want[r.ModuleID])
			}
			if (r.ResultError != "") != (r.ModuleID == "struct") {
				t.Errorf("%s: %s: result_error %q", what, r.ModuleID, r.ResultError)
			}
		}
	}
	for _, q := range []string{"", "?limit=10", "?status=completed", "?order=desc"} {
		code, body := getBody(t, srv.URL+"/api/tasks"+q)
		var list struct {
			Tasks []wireRecord `json:"tasks"`
		}
		if err := json.Unmarshal(body, &list); code != http.StatusOK || err != nil {
			t.Fatalf("GET /api/tasks%s: %d %q (%v)", q, code, body, err)
		}
		check("GET /api/tasks"+q, list.Tasks)
	}
	var one []wireRecord
	for m, id := range ids {
		code, body := getBody(t, srv.URL+"/api/tasks/"+id)
		var r wireRecord
		if err := json.Unmarshal(body, &r); code != http.StatusOK || err != nil {
			t.Fatalf("GET /api/tasks/{%s}: %d %q (%v)", m, code, body, err)
		}
		one = append(one, r)
	}
	check("GET /api/tasks/{id}", one)
	done := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for len(done) < len(ids) {
		select {
		case e, ok := <-stream:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if e.Status == apcore.StatusCompleted && ids[e.ModuleID] == e.TaskID {
				done[e.ModuleID] = true
			}
		case <-deadline:
			t.Fatalf("the stream reported %v completed, want all of %v", done, ids)
		}
	}
}

// smallBuffers makes the server's sockets send buffers small, so that a
// client that stops reading blocks the server's writes after a few
// kilobytes rather than megabytes.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(4096)
	}
	return c, err
}

// stuckClient opens GET /api/events with a small receive buffer, reads
// the response's header, then reads nothing more until the test ends.
func stuckClient(t *testing.T, srv *httptest.Server) {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
	}}
	conn, err := d.Dial("tcp", srv.Listener.Addr().String())
	must(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "GET /api/events HTTP/1.1\r\nHost: %s\r\n\r\n", srv.Listener.Addr())
	must(t, err)
	res, err := http.ReadResponse(bufio.NewReaderSize(conn, 16), nil)
	must(t, err)
	if res.StatusCode != 200 {
		t.Fatalf("GET /api/events: %d", res.StatusCode)
	}
}

// chatty reports progress with a long message a few times and returns a
// result of size bytes: many bytes of events per task.
func chatty(size int) apcore.Executor {
	msg := strings.Repeat("m", 2000)
	return apcore.ExecutorFunc(func(ctx context.Context, _ string, _ map[string]any) (any, error) {
		for p := range 3 {
			if err := apcore.ReportProgress(ctx, float64(10*(p+1)), msg); err != nil {
				return nil, err
			}
		}
		return strings.Repeat("r", size), nil
	})
}

// A client that stops reading (a frozen tab, a dead network path) is
// dropped: its handler's writes have a deadline, so the handler returns,
// and with no other client the hub unsubscribes from the manager and stops
// polling. Before, the handler blocked in a write for ever, and the
// manager paid for the subscription for ever.
func TestEventsStuckClientLetGo(t *testing.T) {
	mgr := newManager(t, chatty(100))
	h, err := apcorehttp.NewHandler(mgr, apcorehttp.EventTimings(200*time.Millisecond, 20*time.Millisecond, 64<<10))
	must(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	stuckClient(t, srv)
	if !apcorehttp.WaitHub(h, 5*time.Second, func(clients, serving int, running bool) bool { return clients == 1 && running }) {
		t.Fatal("the stuck client never registered")
	}
	deadline := time.Now().Add(30 * time.Second)
	for !apcorehttp.WaitHub(h, 50*time.Millisecond, func(clients, serving int, running bool) bool { return !running && serving == 0 }) {
		if time.Now().After(deadline) {
			c, r := apcorehttp.HubState(h)
			t.Fatalf("a client that stopped reading is still served: %d clients, running %v", c, r)
		}
		submitN(t, mgr, "chatty", 50) // more events for it not to read
	}
	closed := make(chan struct{})
	go func() { srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the server could not close: a handler is still blocked")
	}
}

// A client that stops reading pins no records: the stream queues small
// events (no results), a bounded number of bytes per client. Before, it
// queued up to 4,096 whole records: 200 tasks with 1 MB results pinned
// some 200 MB after the store had deleted them.
func TestEventsStuckClientPinsNoResults(t *testing.T) {
	mgr := newManager(t, chatty(1_000_000))
	h, err := apcorehttp.NewHandler(mgr)
	must(t, err)
	srv := httptest.NewUnstartedServer(h)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close) // after the stuck client has closed its connection
	stuckClient(t, srv)
	if !apcorehttp.WaitHub(h, 5*time.Second, func(clients, serving int, running bool) bool { return clients == 1 }) {
		t.Fatal("the stuck client never registered")
	}
	before := heapAfterGC()
	submitN(t, mgr, "big", 200)
	// The results leave the store; what is still reachable is pinned by
	// the event stream.
	n, err := mgr.Cleanup(context.Background(), -1)
	must(t, err)
	if n != 200 {
		t.Fatalf("Cleanup deleted %d records, want 200", n)
	}
	after := heapAfterGC()
	grew := int64(after) - int64(before)
	t.Logf("heap after 200 tasks with 1 MB results, deleted, and a client that reads nothing: %+.1f MB", float64(grew)/1e6)
	if grew > 32<<20 {
		t.Errorf("the heap grew by %.0f MB: the stuck client pins the results", float64(grew)/1e6)
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

package apcorehttp_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// hostileKey is a unique key a user could choose: markup, quotes, an
// ampersand, a line separator, and characters a URL must escape.
const hostileKey = "<img src=x onerror=\"window.__xss=4\">'&amp;\u2028 ?a=1#b"

// The records of GET /api/tasks and GET /api/tasks/{id} carry run_at,
// unique_key and priority exactly as TaskInfo.MarshalJSON writes them (and
// nothing of them when unset); status=scheduled keeps the pending records
// whose run_at is in the future, unique_key the records with that key, also
// together with module and order; each says what it read.
func TestListScheduledAndUniqueKey(t *testing.T) {
	store := newCountingStore(t, apcore.NewMemoryStore())
	// Nothing starts: the pending records stay pending.
	mgr := newManager(t, quick, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	srv, _ := serve(t, mgr)
	ctx := context.Background()
	submit := func(module string, opts ...apcore.SubmitOption) string {
		t.Helper()
		id, err := mgr.Submit(ctx, module, nil, opts...)
		must(t, err)
		return id
	}
	now := time.Now()
	// A finished record with a key and a run_at long past.
	past := now.Add(-time.Hour).UTC().Truncate(time.Microsecond)
	done := "00000000-0000-4000-8000-00000000d0e0"
	must(t, store.Save(ctx, apcore.TaskInfo{
		TaskID: done, ModuleID: "mail", Status: apcore.StatusCompleted, Result: 1,
		SubmittedAt: past.Add(-time.Minute), RunAt: &past, StartedAt: past, CompletedAt: past.Add(time.Second),
		UniqueKey: "done-key", Priority: 100,
	}))
	scheduled := submit("mail", apcore.WithRunAt(now.Add(time.Hour)), apcore.WithUniqueKey(hostileKey), apcore.WithPriority(7))
	due := submit("mail", apcore.WithRunAt(now.Add(-time.Minute)))
	plain := submit("mail", apcore.WithUniqueKey("plain-key"), apcore.WithPriority(-3))
	later := submit("report", apcore.WithDelay(2*time.Hour), apcore.WithUniqueKey("k2"))

	// Each record exactly as MarshalJSON writes it.
	for _, id := range []string{done, scheduled, due, plain, later} {
		info, err := mgr.Status(ctx, id)
		must(t, err)
		want, err := json.Marshal(info)
		must(t, err)
		code, body := getBody(t, srv.URL+"/api/tasks/"+id)
		if code != http.StatusOK || string(body) != string(want)+"\n" {
			t.Errorf("GET /api/tasks/%s: %d %s\nwant %s", id, code, body, want)
		}
		p, _ := getPage(t, srv.URL+"/api/tasks?limit=10")
		for _, r := range p.Tasks {
			if r.TaskID == id {
				if got, _ := json.Marshal(r); string(got) != string(want) {
					t.Errorf("GET /api/tasks: %s\nwant %s", got, want)
				}
			}
		}
	}
	var raw map[string]any
	if get(t, srv.URL+"/api/tasks/"+scheduled, &raw) != 200 || raw["unique_key"] != hostileKey || raw["priority"] != 7.0 || raw["run_at"] == nil {
		t.Errorf("the scheduled record: %v", raw)
	}
	raw = nil
	if get(t, srv.URL+"/api/tasks/"+due, &raw) != 200 || raw["unique_key"] != nil || raw["priority"] != nil || raw["run_at"] == nil {
		t.Errorf("the due record: %v", raw)
	}

	q := func(params ...string) string {
		v := url.Values{}
		for i := 0; i+1 < len(params); i += 2 {
			v.Set(params[i], params[i+1])
		}
		return srv.URL + "/api/tasks?" + v.Encode()
	}
	for _, c := range []struct {
		u    string
		want []string
	}{
		{q("status", "scheduled"), []string{scheduled, later}},
		{q("status", "scheduled", "order", "desc"), []string{later, scheduled}},
		{q("status", "scheduled", "module", "mail"), []string{scheduled}},
		{q("status", "scheduled", "module", "none"), nil},
		{q("status", "pending"), []string{scheduled, due, plain, later}},
		{q("unique_key", hostileKey), []string{scheduled}},
		{q("unique_key", "plain-key"), []string{plain}},
		{q("unique_key", "done-key"), []string{done}},
		{q("unique_key", "done-key", "status", "pending"), nil},
		{q("unique_key", "k2", "status", "scheduled"), []string{later}},
		{q("unique_key", "plain-key", "status", "scheduled"), nil},
		{q("unique_key", "plain"), nil}, // exact, not a prefix
		{q("unique_key", "PLAIN-KEY"), nil},
	} {
		p, _ := getPage(t, c.u)
		if got := p.ids(); strings.Join(got, ",") != strings.Join(c.want, ",") {
			t.Errorf("%s: %v, want %v", c.u, got, c.want)
		}
		if p.Scanned == nil && c.u != q("status", "pending") {
			t.Errorf("%s: no scanned", c.u)
		}
		if p.Next != nil {
			t.Errorf("%s: next %q on the only page", c.u, *p.Next)
		}
	}
	// Paged one at a time: the Link carries the filter on.
	u := q("status", "scheduled", "limit", "1")
	var got []string
	for range 5 {
		p, link := getPage(t, u)
		got = append(got, p.ids()...)
		if p.Next == nil {
			break
		}
		u = follow(t, u, link)
	}
	if strings.Join(got, ",") != scheduled+","+later {
		t.Errorf("status=scheduled&limit=1 over the pages: %v", got)
	}
	for _, bad := range []string{
		q("status", "Scheduled"),
		q("status", "later"),
		q("unique_key", strings.Repeat("k", 257)),
	} {
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		code, body := getBody(t, bad)
		_ = json.Unmarshal(body, &e)
		if code != http.StatusBadRequest || e.Error.Code != "GENERAL_INVALID_INPUT" {
			t.Errorf("%s: %d %s, want 400 GENERAL_INVALID_INPUT", bad, code, body)
		}
	}
	if n := store.full.Load() + store.byStatus.Load(); n != 0 {
		t.Errorf("the store was listed %d times", n)
	}
}

// The scheduled and unique-key filters cost what the module filter costs:
// about 10,000 records read per request, with a next that carries on.
func TestListScheduledAndKeyScanBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("saves 25,000 records and submits 10,500 tasks")
	}
	store := newCountingStore(t, apcore.NewMemoryStore())
	saveRecords(t, store, 25_000, "history", 0, "")
	ctx := context.Background()
	keyed := "00000000-0000-4000-8000-0000000ffff0"
	at := time.Now().Add(-time.Minute)
	must(t, store.Save(ctx, apcore.TaskInfo{
		TaskID: keyed, ModuleID: "history", Status: apcore.StatusFailed, Error: "no",
		SubmittedAt: at, StartedAt: at, CompletedAt: at, UniqueKey: "needle",
	}))
	mgr := newManager(t, quick, apcore.WithStore(store), apcore.WithMaxConcurrent(0), apcore.WithMaxTasks(20_000))
	srv, _ := serve(t, mgr)
	for i := range 10_500 {
		_, err := mgr.Submit(ctx, "queued", map[string]any{"n": i})
		must(t, err)
	}
	last, err := mgr.Submit(ctx, "queued", nil, apcore.WithDelay(time.Hour))
	must(t, err)

	for _, c := range []struct {
		u    string
		want string
	}{
		{srv.URL + "/api/tasks?unique_key=needle", keyed},
		{srv.URL + "/api/tasks?status=scheduled", last},
	} {
		u := c.u
		var got []string
		var scans []int
		for range 10 {
			p, link := getPage(t, u)
			got = append(got, p.ids()...)
			if p.Scanned == nil {
				t.Fatalf("%s: no scanned", u)
			}
			scans = append(scans, *p.Scanned)
			if *p.Scanned > 10_000+apcore.MaxPageLimit {
				t.Errorf("%s: scanned %d records; the budget is 10,000", u, *p.Scanned)
			}
			if p.Next == nil {
				break
			}
			u = follow(t, u, link)
		}
		if strings.Join(got, ",") != c.want || len(scans) < 2 {
			t.Errorf("%s over the pages: %v (scanned %v), want [%s] after more than one request", c.u, got, scans, c.want)
		}
		t.Logf("%s: records read per request: %v", c.u, scans)
	}
	if n := store.full.Load() + store.byStatus.Load(); n != 0 {
		t.Errorf("the store was listed %d times", n)
	}
}

// The chart's queue wait of a scheduled task counts from its run_at, not
// from its submission: waiting for its time is no queue wait.
func TestChartWaitFromRunAt(t *testing.T) {
	store := apcore.NewMemoryStore()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Microsecond)
	runAt := now.Add(-time.Minute)
	must(t, store.Save(ctx, apcore.TaskInfo{
		TaskID: "00000000-0000-4000-8000-000000000001", ModuleID: "later", Status: apcore.StatusCompleted, Result: 1,
		SubmittedAt: now.Add(-4 * time.Minute), RunAt: &runAt,
		StartedAt: runAt.Add(2 * time.Second), CompletedAt: runAt.Add(3 * time.Second),
	}))
	mgr := newManager(t, quick, apcore.WithStore(store))
	srv, _ := serve(t, mgr)
	var sum struct {
		Chart struct {
			WaitMax []float64 `json:"wait_max"`
		} `json:"chart"`
	}
	if code := get(t, srv.URL+"/api/summary", &sum); code != 200 {
		t.Fatalf("GET /api/summary: %d", code)
	}
	peak := 0.0
	for _, w := range sum.Chart.WaitMax {
		peak = max(peak, w)
	}
	if peak < 1.9 || peak > 2.1 {
		t.Errorf("the chart's longest wait is %v s, want 2 s (from run_at, not from the submission 3 min before)", peak)
	}
}

// Events carry run_at and priority when set, so the page can show a task
// submitted after it loaded as scheduled.
func TestEventsCarryRunAtAndPriority(t *testing.T) {
	mgr := newManager(t, quick, apcore.WithMaxConcurrent(0))
	srv, _ := serve(t, mgr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := events(t, ctx, srv.URL+"/api/events")
	at := time.Now().Add(time.Hour)
	id, err := mgr.Submit(context.Background(), "later", nil, apcore.WithRunAt(at), apcore.WithPriority(-42), apcore.WithUniqueKey(hostileKey))
	must(t, err)
	deadline := time.After(5 * time.Second)
	for {
		select {
		case e, ok := <-stream:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if e.TaskID != id {
				continue
			}
			if e.RunAt == nil || !e.RunAt.Equal(time.UnixMicro(at.UnixMicro())) || e.Priority != -42 || e.UniqueKey != "" {
				t.Errorf("event: run_at %v, priority %d, unique key %q; want %v, -42 and none (the record has it)", e.RunAt, e.Priority, e.UniqueKey, at)
			}
			return
		case <-deadline:
			t.Fatalf("no event of %s", id)
		}
	}
}

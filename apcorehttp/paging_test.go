package apcorehttp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/apcorehttp"
)

// countingStore is a MemoryStore that counts the calls of List, and fails
// the test at once on List("") while strict: the dashboard must never list
// every record. It pages through the MemoryStore's Pager.
type countingStore struct {
	*apcore.MemoryStore
	t        testing.TB
	strict   atomic.Bool
	full     atomic.Int64 // List("")
	byStatus atomic.Int64 // List(status)
	pages    atomic.Int64 // ListPage
	active   atomic.Int64 // ListPage of pending or running records
	counts   atomic.Int64 // Count
}

func (s *countingStore) Count(ctx context.Context, statuses ...apcore.TaskStatus) (int, error) {
	s.counts.Add(1)
	return s.MemoryStore.Count(ctx, statuses...)
}

func newCountingStore(t testing.TB, inner *apcore.MemoryStore) *countingStore {
	s := &countingStore{MemoryStore: inner, t: t}
	s.strict.Store(true)
	return s
}

func (s *countingStore) List(ctx context.Context, status apcore.TaskStatus) ([]apcore.TaskInfo, error) {
	if status == "" {
		s.full.Add(1)
		if s.strict.Load() {
			s.t.Errorf("List(\"\") was called: the dashboard must never list every record")
		}
	} else {
		s.byStatus.Add(1)
	}
	return s.MemoryStore.List(ctx, status)
}

func (s *countingStore) ListPage(ctx context.Context, opts apcore.ListOptions) (apcore.TaskPage, error) {
	s.pages.Add(1)
	if opts.Status.IsActive() {
		s.active.Add(1)
	}
	if p, ok := any(s.MemoryStore).(apcore.Pager); ok {
		return p.ListPage(ctx, opts)
	}
	// A MemoryStore without a Pager of its own: this store's stand-in
	// pages the whole list (uncounted: it stands for the store's pager).
	all, err := s.MemoryStore.List(ctx, opts.Status)
	if err != nil {
		return apcore.TaskPage{}, err
	}
	if opts.Newest {
		slices.Reverse(all)
	}
	start := 0
	if opts.After != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(opts.After, "t."))
		if err != nil || !strings.HasPrefix(opts.After, "t.") {
			return apcore.TaskPage{}, &apcore.Error{Code: apcore.CodeInvalidInput, Message: "not a cursor of this store"}
		}
		start = min(n, len(all))
	}
	end := min(start+opts.Limit, len(all))
	page := apcore.TaskPage{Tasks: all[start:end]}
	if end < len(all) {
		page.Next = "t." + strconv.Itoa(end)
	}
	return page, nil
}

// page is GET /api/tasks's answer.
type page struct {
	Tasks   []apcore.TaskInfo `json:"tasks"`
	Next    *string           `json:"next"`
	Total   *int              `json:"total"`
	Scanned *int              `json:"scanned"`
}

func (p page) ids() []string {
	var out []string
	for _, t := range p.Tasks {
		out = append(out, t.TaskID)
	}
	return out
}

// getPage GETs a page and returns it with its Link header.
func getPage(t *testing.T, u string) (page, string) {
	t.Helper()
	res, err := http.Get(u)
	must(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	must(t, err)
	if res.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", u, res.StatusCode, body)
	}
	var p page
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("GET %s: %v in %s", u, err, body)
	}
	if p.Tasks == nil {
		t.Fatalf("GET %s: tasks is null or absent: %s", u, body)
	}
	return p, res.Header.Get("Link")
}

// follow resolves a Link header's target against the URL it came with.
func follow(t *testing.T, base, link string) string {
	t.Helper()
	target, ok := strings.CutPrefix(link, "<")
	target, rest, ok2 := strings.Cut(target, ">")
	if !ok || !ok2 || rest != `; rel="next"` {
		t.Fatalf("Link header %q", link)
	}
	b, err := url.Parse(base)
	must(t, err)
	r, err := url.Parse(target)
	must(t, err)
	return b.ResolveReference(r).String()
}

// saveRecords saves n finished records of module (every k-th of module2)
// straight into the store, and returns their ids in insertion order.
func saveRecords(t testing.TB, store apcore.TaskStore, n int, module string, every int, module2 string) []string {
	t.Helper()
	now := time.Now()
	ids := make([]string, n)
	for i := range n {
		m := module
		if every > 0 && i%every == every-1 {
			m = module2
		}
		ids[i] = fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		sub := now.Add(-time.Duration(n-i) * time.Millisecond)
		must(t, store.Save(context.Background(), apcore.TaskInfo{
			TaskID: ids[i], ModuleID: m, Status: apcore.StatusCompleted,
			SubmittedAt: sub, StartedAt: sub, CompletedAt: sub.Add(time.Microsecond), Result: i,
		}))
	}
	return ids
}

// Without paging parameters GET /api/tasks answers the first 100 records
// with a next cursor, in the body and as a Link header; following it
// pages through every record once, in insertion order, and the last page
// has neither. Newest first goes the other way.
func TestListDefaultLimitAndNext(t *testing.T) {
	store := newCountingStore(t, apcore.NewMemoryStore())
	ids := saveRecords(t, store, 250, "alpha", 0, "")
	mgr := newManager(t, quick, apcore.WithStore(store))
	srv, _ := serve(t, mgr)

	for _, order := range []string{"", "desc"} {
		u := srv.URL + "/api/tasks"
		if order != "" {
			u += "?order=" + order
		}
		var got []string
		for n := 0; ; n++ {
			p, link := getPage(t, u)
			got = append(got, p.ids()...)
			if p.Total != nil {
				t.Errorf("%s: total %v: a page counts nothing", u, *p.Total)
			}
			if p.Scanned != nil {
				t.Errorf("%s: scanned %v without a module filter", u, *p.Scanned)
			}
			if n < 2 {
				if len(p.Tasks) != 100 || p.Next == nil || link == "" {
					t.Fatalf("%s: page %d has %d records, next %v, Link %q; want 100, and both", u, n, len(p.Tasks), p.Next, link)
				}
				if !strings.Contains(link, "after="+url.QueryEscape(*p.Next)) {
					t.Errorf("Link %q does not carry next %q", link, *p.Next)
				}
				u = follow(t, u, link)
				continue
			}
			if len(p.Tasks) != 50 || p.Next != nil || link != "" {
				t.Errorf("%s: last page has %d records, next %v, Link %q; want 50 and neither", u, len(p.Tasks), p.Next, link)
			}
			break
		}
		want := ids
		if order == "desc" {
			want = make([]string, len(ids))
			for i, id := range ids {
				want[len(ids)-1-i] = id
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("order %q: the pages hold %d records, not each record once in order", order, len(got))
		}
	}
	if n := store.full.Load() + store.byStatus.Load(); n != 0 {
		t.Errorf("the store was listed %d times", n)
	}
	if n := store.counts.Load(); n != 0 {
		t.Errorf("GET /api/tasks counted %d times; a page counts nothing", n)
	}
}

// Bad paging parameters and cursors are 400 with GENERAL_INVALID_INPUT.
func TestListBadParameters(t *testing.T) {
	mgr := newManager(t, quick, apcore.WithStore(newCountingStore(t, apcore.NewMemoryStore())))
	srv, _ := serve(t, mgr)
	submitN(t, mgr, "alpha", 3)
	for _, q := range []string{
		"status=bogus", "order=sideways",
		"limit=0", "limit=-1", "limit=1001", "limit=x",
		"offset=-1", "offset=x", "offset=10001",
		"after=garbage", "after=~h.garbage!", "after=" + url.QueryEscape("~h.") + "AA",
		"after=" + strings.Repeat("a", 2000),
		"offset=1&after=m1.1",
		"module=alpha&after=garbage",
	} {
		code, body := getBody(t, srv.URL+"/api/tasks?"+q)
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		if err := json.Unmarshal(body, &e); code != 400 || err != nil || e.Error.Code != string(apcore.CodeInvalidInput) || e.Error.Message == "" {
			t.Errorf("%s: %d %s, want 400 GENERAL_INVALID_INPUT", q, code, body)
		}
	}
	for _, q := range []string{"limit=1", "limit=1000", "offset=10000", "offset=0"} {
		if code, body := getBody(t, srv.URL+"/api/tasks?"+q); code != 200 {
			t.Errorf("%s: %d %s, want 200", q, code, body)
		}
	}
}

// A module filter reads store pages and keeps the matching records: at
// most 10,000 records per request, so a rare module's page may come empty
// with a next cursor, and following the cursors finds every match once.
func TestListModuleScan(t *testing.T) {
	if testing.Short() {
		t.Skip("saves 25,000 records")
	}
	store := newCountingStore(t, apcore.NewMemoryStore())
	// Every 5,000th record is of module "rare": 5 of them, the first at
	// position 4,999.
	ids := saveRecords(t, store, 25_000, "common", 5000, "rare")
	mgr := newManager(t, quick, apcore.WithStore(store))
	srv, _ := serve(t, mgr)

	u := srv.URL + "/api/tasks?module=rare&limit=2"
	var got []string
	var scans []int
	for range 20 {
		p, link := getPage(t, u)
		got = append(got, p.ids()...)
		if p.Scanned == nil {
			t.Fatalf("%s: no scanned", u)
		}
		scans = append(scans, *p.Scanned)
		if *p.Scanned > 10_000 {
			t.Errorf("%s: scanned %d records; the budget is 10,000", u, *p.Scanned)
		}
		if p.Next == nil {
			break
		}
		u = follow(t, u, link)
	}
	want := []string{ids[4999], ids[9999], ids[14999], ids[19999], ids[24999]}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("module=rare over the pages: %v, want %v (scanned %v)", got, want, scans)
	}
	t.Logf("records read per request: %v", scans)

	// The newest first, one at a time: carries on inside a store page.
	u = srv.URL + "/api/tasks?module=rare&order=desc&limit=1"
	got = nil
	for range 20 {
		p, link := getPage(t, u)
		got = append(got, p.ids()...)
		if p.Next == nil {
			break
		}
		u = follow(t, u, link)
	}
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("module=rare&order=desc: %v, want %v", got, want)
	}

	// A dense module, paged inside store pages: each record once.
	u = srv.URL + "/api/tasks?module=common&limit=300&status=completed"
	seen := map[string]bool{}
	for range 200 {
		p, link := getPage(t, u)
		for _, id := range p.ids() {
			if seen[id] {
				t.Fatalf("%s repeated", id)
			}
			seen[id] = true
		}
		if p.Next == nil {
			break
		}
		u = follow(t, u, link)
	}
	if len(seen) != 25_000-5 {
		t.Errorf("module=common: %d records over the pages, want %d", len(seen), 25_000-5)
	}
	if n := store.full.Load() + store.byStatus.Load(); n != 0 {
		t.Errorf("the store was listed %d times", n)
	}
}

// The handler never lists every record: not for the page, the summary,
// GET /api/tasks with any parameters, the cancel endpoint, nor the event
// stream's poll of another replica's tasks; and with a store that pages,
// it lists nothing at all.
func TestNeverListsEverything(t *testing.T) {
	store := newCountingStore(t, apcore.NewMemoryStore())
	saveRecords(t, store, 2000, "history", 7, "other")
	g := newGate()
	local := newManager(t, g, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	remote := newManager(t, g, apcore.WithStore(store))
	srv, _ := serve(t, local)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := events(t, ctx, srv.URL+"/api/events")

	id, err := remote.Submit(context.Background(), "remote.job", nil)
	must(t, err)
	<-g.started
	for e := next(t, ch, id, 3*time.Second); e.Status != apcore.StatusRunning; e = next(t, ch, id, 3*time.Second) {
	}
	for _, path := range []string{
		"/", "/app.js", "/api/summary",
		"/api/tasks", "/api/tasks?status=running", "/api/tasks?order=desc&limit=50",
		"/api/tasks?module=other", "/api/tasks?module=other&status=completed&order=desc&limit=10",
		"/api/tasks?offset=100&limit=10", "/api/tasks/" + id,
	} {
		if code, body := getBody(t, srv.URL+path); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
	var sum struct {
		Counts  map[string]int `json:"counts"`
		Modules []string       `json:"modules"`
	}
	get(t, srv.URL+"/api/summary", &sum)
	if sum.Counts["total"] != 2001 || sum.Counts["running"] != 1 || sum.Counts["completed"] != 2000 {
		t.Errorf("summary counts %v, want 2,001 in all, 1 running", sum.Counts)
	}
	if strings.Join(sum.Modules, ",") != "history,other,remote.job" {
		t.Errorf("summary modules %v", sum.Modules)
	}
	close(g.release)
	for e := next(t, ch, id, 3*time.Second); e.Status != apcore.StatusCompleted; e = next(t, ch, id, 3*time.Second) {
	}
	// A few more polls.
	time.Sleep(2 * time.Second)
	cancel()
	for range ch {
	}
	if full, by := store.full.Load(), store.byStatus.Load(); full != 0 || by != 0 {
		t.Errorf("the store was listed: %d times whole, %d times by state; want never (it pages)", full, by)
	}
	if store.pages.Load() == 0 {
		t.Errorf("ListPage was never called: the test checks nothing")
	}
	store.strict.Store(false) // Shutdown is the core's business
}

// The event stream's poll of other replicas' tasks costs what is active:
// above its cap (5,000; 3 here) it counts the active records and reads
// none, reporting nothing of other replicas' tasks; under the cap again, it
// reads and reports them.
func TestEventsPollCap(t *testing.T) {
	store := newCountingStore(t, apcore.NewMemoryStore())
	local := newManager(t, quick, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	remote := newManager(t, quick, apcore.WithStore(store), apcore.WithMaxConcurrent(0))
	srv, _ := serve(t, local, apcorehttp.PollCap(3))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := events(t, ctx, srv.URL+"/api/events")
	submit := func() string {
		id, err := remote.Submit(context.Background(), "remote.job", nil)
		must(t, err)
		return id
	}
	// nextOf waits for an event about each of ids, in any order.
	nextOf := func(ids ...string) {
		t.Helper()
		want := map[string]bool{}
		for _, id := range ids {
			want[id] = true
		}
		deadline := time.After(3 * time.Second)
		for len(want) > 0 {
			select {
			case e, ok := <-ch:
				if !ok {
					t.Fatal("the event stream ended")
				}
				delete(want, e.TaskID)
			case <-deadline:
				t.Fatalf("no event about %v within 3s", want)
			}
		}
	}
	a, b := submit(), submit()
	nextOf(a, b)

	c, d := submit(), submit()         // 4 active: over the cap
	time.Sleep(300 * time.Millisecond) // a poll under way ends
	before := store.active.Load()
	deadline := time.After(2 * time.Second) // two polls and more
	for quiet := true; quiet; {
		select {
		case e := <-ch:
			if e.TaskID == c || e.TaskID == d {
				t.Errorf("over the cap the poll reported %s", e.TaskID)
			}
		case <-deadline:
			quiet = false
		}
	}
	if n := store.active.Load() - before; n != 0 {
		t.Errorf("over the cap the poll read %d pages of active records; want none", n)
	}

	for _, id := range []string{a, b} {
		ok, err := remote.Cancel(context.Background(), id)
		if err != nil || !ok {
			t.Fatalf("Cancel(%s): %v %v", id, ok, err)
		}
	}
	// 2 active: the poll reads them again, and reports them.
	nextOf(c, d)
	if store.active.Load() == before {
		t.Errorf("under the cap again the poll read nothing")
	}
	if full, by := store.full.Load(), store.byStatus.Load(); full != 0 || by != 0 {
		t.Errorf("the store was listed: %d times whole, %d by state", full, by)
	}
	store.strict.Store(false)
}

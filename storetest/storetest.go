// Package storetest checks apcore.TaskStore implementations against the
// store contract, the way testing/fstest checks an fs.FS.
//
// A store is implemented against this package: its tests run Run (or
// TestStore), which checks every rule of the contract and of each optional
// capability the store implements (Counter, ConditionalSaver, Remover,
// SharedStore), and TestReplicas, which runs two managers over it. The
// capabilities, apcore.SharedStore above all, may gain methods in later
// versions of apcore; this package then checks them too, so a store that
// passes it at the version it is built with keeps the contract of that
// version.
//
// Use it from a test of your own store, each check a subtest of its own:
//
//	func TestMyStore(t *testing.T) {
//		storetest.Run(t, func() (apcore.TaskStore, error) {
//			return mystore.New(freshDatabase(t))
//		})
//	}
//
// so that go test -run 'TestMyStore/shared:_claim_by_module' runs one
// check. TestStore runs the same checks and returns one error listing every
// violation, for callers without a *testing.T.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
)

// A check is one rule (or a few close ones) of the contract, run against a
// fresh store; it returns at once for a store without the capability it is
// about.
type check struct {
	name string
	fn   func(*run)
}

// checks are every check, in the order TestStore and Run run them. Their
// names are the subtests' names in Run (go test turns each space into an
// underscore).
var checks = []check{
	{"name", checkName},
	{"round trip", checkRoundTrip},
	{"absent", checkAbsent},
	{"overwrite", checkOverwrite},
	{"list order", checkListOrder},
	{"delete", checkDelete},
	{"list expired", checkListExpired},
	{"copies", checkCopies},
	{"counter", checkCounter},
	{"conditional save", checkConditionalSave},
	{"concurrency", checkConcurrency},
	{"remover", checkRemover},
	{"pager", checkPager},
	{"pager: stable cursor", checkPagerStable},
	{"sweeper", checkSweeper},
	{"sweeper: race", checkSweeperRace},
	{"shared: insert", checkSharedInsert},
	{"shared: admission race", checkSharedAdmissionRace},
	{"shared: update", checkSharedUpdate},
	{"shared: claim", checkSharedClaim},
	{"shared: claim by module", checkSharedClaimByModule},
	{"shared: claim race", checkSharedClaimRace},
	{"shared: claim needs a lease", checkSharedClaimNeedsLease},
	{"shared: leases", checkSharedLeases},
	{"shared: recover", checkSharedRecover},
	{"shared: lost", checkSharedLost},
	{"shared: orphans", checkSharedOrphans},
	{"later: fields", checkLaterFields},
	{"later: unique key", checkUniqueKey},
	{"later: unique key race", checkUniqueKeyRace},
	{"later: claim by priority", checkClaimByPriority},
	{"later: scheduled", checkScheduled},
}

// TestStore checks a TaskStore against every rule of the contract and
// returns one error listing each violation, or nil. newStore returns a
// fresh, empty store on each call.
//
// It checks: a save/get round trip of every field (times to the
// microsecond, results of every JSON type, errors); that Get of an absent id
// is ErrTaskNotFound; that an overwrite keeps the record's list position;
// insertion order of List with and without a status filter; that Delete is
// idempotent; that ListExpired is strict (<), returns terminal records only
// and never one without CompletedAt; that records handed out are copies, in
// both directions, results included; that 8 goroutines saving, reading and
// deleting 1,000 records each leave the store consistent; that the
// optional Counter, ConditionalSaver and Remover agree with List; and, for
// a SharedStore, every rule of each of its methods (see shared.go),
// including that Insert bounds the active records exactly under racing
// inserts, that racing Claims never hand one task to two owners, and that
// a Claim limited to some modules takes only their tasks. For a Pager:
// pages of every size, in both directions and in every state, follow the
// insertion order, end with an empty Next, refuse cursors the store did
// not make, and neither repeat nor skip a record when others (the one a
// cursor names included) are removed and added between pages. For a
// Sweeper: the batch limit, the reference time (CompletedAt, else
// SubmittedAt), strictly before, never an active record, and racing
// sweepers counting each deletion once.
func TestStore(ctx context.Context, newStore func() (apcore.TaskStore, error)) error {
	if ctx == nil || newStore == nil {
		return &apcore.Error{Code: apcore.CodeInvalidInput, Message: "storetest: TestStore needs a context and a newStore function"}
	}
	c := &checker{ctx: ctx, newStore: newStore}
	for _, ch := range checks {
		c.run(ch.name, ch.fn)
	}
	if len(c.errs) == 0 {
		return nil
	}
	return fmt.Errorf("storetest: %d violation(s):\n  %s", len(c.errs), strings.Join(c.errs, "\n  "))
}

// Run runs the checks of TestStore against the stores newStore returns (a
// fresh, empty one on each call), each as a subtest of t named after it
// ("round trip", "shared: claim by module", ...), and reports each
// violation as an error of its subtest. Each check's context is the
// subtest's (t.Context()).
func Run(t *testing.T, newStore func() (apcore.TaskStore, error)) {
	t.Helper()
	if newStore == nil {
		t.Fatal("storetest: Run needs a newStore function")
	}
	for _, ch := range checks {
		t.Run(ch.name, func(t *testing.T) {
			c := &checker{ctx: t.Context(), newStore: newStore}
			c.run(ch.name, ch.fn)
			for _, e := range c.errs {
				t.Error(e)
			}
		})
	}
}

type checker struct {
	ctx      context.Context
	newStore func() (apcore.TaskStore, error)
	mu       sync.Mutex
	errs     []string
}

// run is one check against one fresh store.
type run struct {
	c     *checker
	name  string
	ctx   context.Context
	store apcore.TaskStore
}

// errorf records a violation.
func (r *run) errorf(format string, args ...any) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	r.c.errs = append(r.c.errs, r.name+": "+fmt.Sprintf(format, args...))
}

// stop is raised (as a panic) to end a check after a violation that makes
// the rest of it meaningless.
type stop struct{}

func (r *run) fatalf(format string, args ...any) {
	r.errorf(format, args...)
	panic(stop{})
}

// recoverInto turns a panic in one of the checker's goroutines into a
// violation, so a broken store fails the check instead of the process.
func (r *run) recoverInto() {
	if p := recover(); p != nil {
		if _, ok := p.(stop); !ok {
			r.errorf("panic: %v", p)
		}
	}
}

func (c *checker) run(name string, fn func(*run)) {
	store, err := c.newStore()
	r := &run{c: c, name: name, ctx: c.ctx, store: store}
	if err != nil || store == nil {
		r.errorf("newStore failed: %v", err)
		return
	}
	defer r.recoverInto()
	fn(r)
}

// base is when the checker's records were submitted: a fixed time with
// microseconds, which every store must keep.
var base = time.Date(2024, 3, 9, 12, 30, 45, 123456000, time.UTC)

func at(seconds int) time.Time { return base.Add(time.Duration(seconds) * time.Second) }

// record builds a record in status with the times its state implies.
func record(id string, status apcore.TaskStatus, submitted int) apcore.TaskInfo {
	t := apcore.TaskInfo{TaskID: id, ModuleID: "storetest.job", Status: status, SubmittedAt: at(submitted)}
	if status != apcore.StatusPending {
		t.StartedAt = at(submitted + 1)
	}
	if status.IsTerminal() {
		t.CompletedAt = at(submitted + 2)
	}
	switch status {
	case apcore.StatusCompleted:
		t.Result = map[string]any{"id": id}
	case apcore.StatusFailed:
		t.Error = "failed: " + id
	}
	return t
}

func (r *run) save(t apcore.TaskInfo) {
	if err := r.store.Save(r.ctx, t); err != nil {
		r.fatalf("Save(%s): %v", t.TaskID, err)
	}
}

func (r *run) get(id string) apcore.TaskInfo {
	t, err := r.store.Get(r.ctx, id)
	if err != nil {
		r.fatalf("Get(%s): %v", id, err)
	}
	return t
}

func (r *run) list(status apcore.TaskStatus) []apcore.TaskInfo {
	all, err := r.store.List(r.ctx, status)
	if err != nil {
		r.fatalf("List(%q): %v", status, err)
	}
	return all
}

func ids(infos []apcore.TaskInfo) []string {
	out := make([]string, 0, len(infos))
	for _, t := range infos {
		out = append(out, t.TaskID)
	}
	return out
}

// sameRecord reports how got differs from want, field by field.
func sameRecord(want, got apcore.TaskInfo) []string {
	var diffs []string
	if want.TaskID != got.TaskID || want.ModuleID != got.ModuleID || want.Status != got.Status {
		diffs = append(diffs, fmt.Sprintf("ids/status %s/%s/%s, want %s/%s/%s",
			got.TaskID, got.ModuleID, got.Status, want.TaskID, want.ModuleID, want.Status))
	}
	for _, f := range []struct {
		name      string
		want, got time.Time
	}{
		{"SubmittedAt", want.SubmittedAt, got.SubmittedAt},
		{"StartedAt", want.StartedAt, got.StartedAt},
		{"CompletedAt", want.CompletedAt, got.CompletedAt},
	} {
		if f.want.IsZero() != f.got.IsZero() || !f.want.Equal(f.got) {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", f.name, f.got, f.want))
		}
	}
	if !reflect.DeepEqual(want.Result, got.Result) {
		diffs = append(diffs, fmt.Sprintf("Result %#v, want %#v", got.Result, want.Result))
	}
	if want.Error != got.Error || want.RetryCount != got.RetryCount || want.MaxRetries != got.MaxRetries {
		diffs = append(diffs, fmt.Sprintf("Error/RetryCount/MaxRetries %q/%d/%d, want %q/%d/%d",
			got.Error, got.RetryCount, got.MaxRetries, want.Error, want.RetryCount, want.MaxRetries))
	}
	if (want.RunAt == nil) != (got.RunAt == nil) || (want.RunAt != nil && !want.RunAt.Equal(*got.RunAt)) {
		diffs = append(diffs, fmt.Sprintf("RunAt %v, want %v", fmtAt(got.RunAt), fmtAt(want.RunAt)))
	}
	if want.UniqueKey != got.UniqueKey || want.Priority != got.Priority {
		diffs = append(diffs, fmt.Sprintf("UniqueKey/Priority %q/%d, want %q/%d", got.UniqueKey, got.Priority, want.UniqueKey, want.Priority))
	}
	if want.ErrorCode != got.ErrorCode || want.Progress != got.Progress || want.ProgressMessage != got.ProgressMessage {
		diffs = append(diffs, fmt.Sprintf("ErrorCode/Progress/ProgressMessage %q/%v/%q, want %q/%v/%q",
			got.ErrorCode, got.Progress, got.ProgressMessage, want.ErrorCode, want.Progress, want.ProgressMessage))
	}
	return diffs
}

func checkName(r *run) {
	if r.store.Name() == "" {
		r.errorf("Name() is empty")
	}
}

func checkRoundTrip(r *run) {
	results := []any{
		nil, true, false, 0.0, -1.5, 1e300, "", "text with ünïcode and \"quotes\"",
		[]any{}, []any{1.0, "two", nil, []any{3.0}},
		map[string]any{}, map[string]any{"nested": map[string]any{"list": []any{true, 2.5}}, "null": nil},
	}
	for i, res := range results {
		t := record(fmt.Sprintf("rt-result-%d", i), apcore.StatusCompleted, i)
		t.Result = res
		t.RetryCount, t.MaxRetries = 2, 3
		r.save(t)
		if d := sameRecord(t, r.get(t.TaskID)); d != nil {
			r.errorf("record with result %#v: %s", res, strings.Join(d, "; "))
		}
	}
	for i, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusFailed, apcore.StatusCancelled} {
		t := record(fmt.Sprintf("rt-status-%d", i), st, 100+i)
		switch st {
		case apcore.StatusRunning:
			t.Progress, t.ProgressMessage = 42.5, "half way, ünïcode"
		case apcore.StatusFailed:
			t.ErrorCode, t.Progress, t.ProgressMessage = apcore.CodeModuleTimeout, 10, "stuck"
		}
		r.save(t)
		if d := sameRecord(t, r.get(t.TaskID)); d != nil {
			r.errorf("%s record: %s", st, strings.Join(d, "; "))
		}
	}
}

func checkAbsent(r *run) {
	_, err := r.store.Get(r.ctx, "storetest-absent")
	if !errors.Is(err, apcore.ErrTaskNotFound) {
		r.errorf("Get of an absent id returned %v, want an error matching ErrTaskNotFound", err)
	}
}

func checkOverwrite(r *run) {
	for i, id := range []string{"ow-a", "ow-b", "ow-c"} {
		r.save(record(id, apcore.StatusPending, i))
	}
	r.save(record("ow-a", apcore.StatusCompleted, 0))
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"ow-a", "ow-b", "ow-c"}) {
		r.errorf("after overwriting the first record, List = %v, want [ow-a ow-b ow-c]", got)
	}
	if got := r.get("ow-a"); got.Status != apcore.StatusCompleted {
		r.errorf("overwrite did not take: status %s", got.Status)
	}
}

func checkListOrder(r *run) {
	// Ids and times out of order, so that sorting by either fails.
	seeded := []apcore.TaskInfo{
		record("lo-m", apcore.StatusCompleted, 50),
		record("lo-b", apcore.StatusRunning, 10),
		record("lo-z", apcore.StatusCompleted, 5),
		record("lo-a", apcore.StatusFailed, 40),
		record("lo-c", apcore.StatusCompleted, 30),
		record("lo-k", apcore.StatusPending, 20),
	}
	for _, t := range seeded {
		r.save(t)
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, ids(seeded)) {
		r.errorf("List(\"\") = %v, want insertion order %v", got, ids(seeded))
	}
	want := map[apcore.TaskStatus][]string{
		apcore.StatusCompleted: {"lo-m", "lo-z", "lo-c"},
		apcore.StatusRunning:   {"lo-b"},
		apcore.StatusFailed:    {"lo-a"},
		apcore.StatusPending:   {"lo-k"},
		apcore.StatusCancelled: {},
	}
	for st, w := range want {
		if got := ids(r.list(st)); !reflect.DeepEqual(got, w) {
			r.errorf("List(%q) = %v, want %v", st, got, w)
		}
	}
}

func checkDelete(r *run) {
	r.save(record("del-a", apcore.StatusCompleted, 0))
	r.save(record("del-b", apcore.StatusCompleted, 1))
	for i := 0; i < 2; i++ {
		if err := r.store.Delete(r.ctx, "del-a"); err != nil {
			r.errorf("Delete #%d of del-a: %v", i+1, err)
		}
	}
	if err := r.store.Delete(r.ctx, "del-never-saved"); err != nil {
		r.errorf("Delete of an absent id: %v", err)
	}
	if _, err := r.store.Get(r.ctx, "del-a"); !errors.Is(err, apcore.ErrTaskNotFound) {
		r.errorf("Get after Delete returned %v, want ErrTaskNotFound", err)
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"del-b"}) {
		r.errorf("List after Delete = %v, want [del-b]", got)
	}
	r.save(record("del-a", apcore.StatusPending, 2)) // saved again: a new record, at the end
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"del-b", "del-a"}) {
		r.errorf("List after re-saving a deleted id = %v, want [del-b del-a]", got)
	}
}

func checkListExpired(r *run) {
	cut := at(100)
	seeded := []apcore.TaskInfo{
		withCompleted(record("ex-done-before", apcore.StatusCompleted, 0), cut.Add(-time.Microsecond)),
		withCompleted(record("ex-failed-before", apcore.StatusFailed, 0), cut.Add(-time.Hour)),
		withCompleted(record("ex-cancel-before", apcore.StatusCancelled, 0), cut.Add(-time.Second)),
		withCompleted(record("ex-at-cutoff", apcore.StatusCompleted, 0), cut),
		withCompleted(record("ex-after", apcore.StatusCompleted, 0), cut.Add(time.Microsecond)),
		withCompleted(record("ex-terminal-no-time", apcore.StatusFailed, 0), time.Time{}),
		withCompleted(record("ex-running-old", apcore.StatusRunning, 0), cut.Add(-time.Hour)),
		record("ex-pending-old", apcore.StatusPending, 0),
	}
	for _, t := range seeded {
		r.save(t)
	}
	got, err := r.store.ListExpired(r.ctx, cut)
	if err != nil {
		r.fatalf("ListExpired: %v", err)
	}
	want := []string{"ex-done-before", "ex-failed-before", "ex-cancel-before"}
	if g := ids(got); !sameSet(g, want) {
		r.errorf("ListExpired(cutoff) = %v, want %v (strictly before, terminal, with CompletedAt)", g, want)
	}
}

func withCompleted(t apcore.TaskInfo, c time.Time) apcore.TaskInfo {
	t.CompletedAt = c
	return t
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	seen := map[string]int{}
	for _, x := range a {
		seen[x]++
	}
	for _, x := range b {
		seen[x]--
	}
	for _, n := range seen {
		if n != 0 {
			return false
		}
	}
	return true
}

func checkCopies(r *run) {
	in := record("cp-a", apcore.StatusCompleted, 0)
	in.Result = map[string]any{"list": []any{1.0, 2.0}, "n": 1.0}
	r.save(in)
	in.Result.(map[string]any)["n"] = 99.0 // the caller's map, after Save
	in.Result.(map[string]any)["list"].([]any)[0] = "changed"
	want := map[string]any{"list": []any{1.0, 2.0}, "n": 1.0}
	if got := r.get("cp-a"); !reflect.DeepEqual(got.Result, want) {
		r.errorf("changing the saved record's result changed the store: %#v", got.Result)
	}
	got := r.get("cp-a")
	if m, ok := got.Result.(map[string]any); ok {
		m["n"] = 7.0
		if l, ok := m["list"].([]any); ok && len(l) > 0 {
			l[0] = "changed"
		}
	}
	got.Status = apcore.StatusFailed
	if again := r.get("cp-a"); !reflect.DeepEqual(again.Result, want) || again.Status != apcore.StatusCompleted {
		r.errorf("changing a record from Get changed the store: %s %#v", again.Status, again.Result)
	}
	listed := r.list("")
	if len(listed) == 1 {
		if m, ok := listed[0].Result.(map[string]any); ok {
			m["n"] = 8.0
		}
	}
	if again := r.get("cp-a"); !reflect.DeepEqual(again.Result, want) {
		r.errorf("changing a record from List changed the store: %#v", again.Result)
	}
	before := r.get("cp-a")
	r.save(record("cp-a", apcore.StatusFailed, 0))
	if before.Status != apcore.StatusCompleted {
		r.errorf("a record from Get changed when the store did")
	}
}

func checkCounter(r *run) {
	counter, ok := r.store.(apcore.Counter)
	if !ok {
		return
	}
	for i, st := range []apcore.TaskStatus{
		apcore.StatusPending, apcore.StatusRunning, apcore.StatusRunning, apcore.StatusCompleted,
		apcore.StatusCompleted, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled,
	} {
		r.save(record(fmt.Sprintf("cnt-%d", i), st, i))
	}
	r.save(record("cnt-0", apcore.StatusCancelled, 0)) // a transition moves a count
	if err := r.store.Delete(r.ctx, "cnt-3"); err != nil {
		r.fatalf("Delete: %v", err)
	}
	agree := func(statuses ...apcore.TaskStatus) {
		n, err := counter.Count(r.ctx, statuses...)
		if err != nil {
			r.errorf("Count(%v): %v", statuses, err)
			return
		}
		want := 0
		if len(statuses) == 0 {
			want = len(r.list(""))
		}
		for _, st := range statuses {
			want += len(r.list(st))
		}
		if n != want {
			r.errorf("Count(%v) = %d, but List has %d", statuses, n, want)
		}
	}
	agree()
	for _, st := range []apcore.TaskStatus{apcore.StatusPending, apcore.StatusRunning, apcore.StatusCompleted, apcore.StatusFailed, apcore.StatusCancelled} {
		agree(st)
	}
	agree(apcore.StatusPending, apcore.StatusRunning)
}

func checkConditionalSave(r *run) {
	cs, ok := r.store.(apcore.ConditionalSaver)
	if !ok {
		return
	}
	r.save(record("cs-a", apcore.StatusRunning, 0))
	r.save(record("cs-b", apcore.StatusPending, 1))
	saved, err := cs.SaveIf(r.ctx, record("cs-a", apcore.StatusCompleted, 0), apcore.StatusPending, apcore.StatusRunning)
	if err != nil || !saved {
		r.errorf("SaveIf from an active state: saved=%v err=%v, want true", saved, err)
	}
	saved, err = cs.SaveIf(r.ctx, record("cs-a", apcore.StatusCancelled, 0), apcore.StatusPending, apcore.StatusRunning)
	if err != nil || saved {
		r.errorf("SaveIf over a terminal record: saved=%v err=%v, want false", saved, err)
	}
	if got := r.get("cs-a"); got.Status != apcore.StatusCompleted {
		r.errorf("a refused SaveIf changed the record to %s", got.Status)
	}
	saved, err = cs.SaveIf(r.ctx, record("cs-absent", apcore.StatusRunning, 2), apcore.StatusPending)
	if err != nil || saved {
		r.errorf("SaveIf of an absent record: saved=%v err=%v, want false", saved, err)
	}
	if _, err := r.store.Get(r.ctx, "cs-absent"); !errors.Is(err, apcore.ErrTaskNotFound) {
		r.errorf("SaveIf of an absent record created it")
	}
	saved, err = cs.SaveIf(r.ctx, record("cs-b", apcore.StatusRunning, 1))
	if err != nil || saved {
		r.errorf("SaveIf with no from states: saved=%v err=%v, want false", saved, err)
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"cs-a", "cs-b"}) {
		r.errorf("List after SaveIf = %v, want [cs-a cs-b]", got)
	}
	// Racing conditional saves from one state: exactly one wins.
	r.save(record("cs-race", apcore.StatusRunning, 3))
	var wg sync.WaitGroup
	var mu sync.Mutex
	winners := 0
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			defer r.recoverInto()
			st := apcore.StatusCompleted
			if i%2 == 1 {
				st = apcore.StatusCancelled
			}
			ok, err := cs.SaveIf(r.ctx, record("cs-race", st, 3), apcore.StatusRunning)
			if err != nil {
				r.errorf("racing SaveIf: %v", err)
			}
			if ok {
				mu.Lock()
				winners++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if winners != 1 {
		r.errorf("%d of 8 racing SaveIf calls from running won; want exactly 1", winners)
	}
}

// checkConcurrency runs 8 writers side by side. 300 records each are enough
// to interleave them. With 1,000 each, sqlstore's SQLite contract (3 s
// without the race detector) took 147 s under -race, 136 of them here.
func checkConcurrency(r *run) {
	const workers, perWorker = 8, 300
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			defer r.recoverInto()
			for i := 0; i < perWorker; i++ {
				id := fmt.Sprintf("cc-%d-%d", w, i)
				t := record(id, apcore.StatusPending, i)
				if err := r.store.Save(r.ctx, t); err != nil {
					r.errorf("Save(%s): %v", id, err)
					return
				}
				got, err := r.store.Get(r.ctx, id)
				if err != nil || got.TaskID != id {
					r.errorf("Get(%s) right after Save: %v", id, err)
					return
				}
				t = record(id, apcore.StatusCompleted, i)
				if err := r.store.Save(r.ctx, t); err != nil {
					r.errorf("Save(%s) completed: %v", id, err)
					return
				}
				if i%2 == 1 {
					if err := r.store.Delete(r.ctx, id); err != nil {
						r.errorf("Delete(%s): %v", id, err)
						return
					}
				}
			}
		}(w)
	}
	wg.Wait()
	all := r.list("")
	if len(all) != workers*perWorker/2 {
		r.errorf("after the concurrent run List has %d records, want %d", len(all), workers*perWorker/2)
	}
	next := map[int]int{} // per worker, the next index expected in order
	for _, t := range all {
		var w, i int
		if _, err := fmt.Sscanf(t.TaskID, "cc-%d-%d", &w, &i); err != nil || i%2 == 1 || t.Status != apcore.StatusCompleted {
			r.errorf("unexpected record after the concurrent run: %s %s", t.TaskID, t.Status)
			continue
		}
		if i < next[w] {
			r.errorf("worker %d's records are out of insertion order at %s", w, t.TaskID)
		}
		next[w] = i + 1
	}
	if counter, ok := r.store.(apcore.Counter); ok {
		if n, err := counter.Count(r.ctx); err != nil || n != len(all) {
			r.errorf("Count() = %d (%v) after the concurrent run, List has %d", n, err, len(all))
		}
	}
}

package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// The checks of the optional Remover and SharedStore capabilities. Each
// returns at once for a store without the capability.

func checkRemover(r *run) {
	rm, ok := r.store.(apcore.Remover)
	if !ok {
		return
	}
	r.save(record("rm-a", apcore.StatusCompleted, 0))
	if deleted, err := rm.Remove(r.ctx, "rm-a"); err != nil || !deleted {
		r.errorf("Remove of a present record: deleted=%v err=%v, want true", deleted, err)
	}
	if deleted, err := rm.Remove(r.ctx, "rm-a"); err != nil || deleted {
		r.errorf("Remove of an absent record: deleted=%v err=%v, want false, nil", deleted, err)
	}
	// Racing removes of one record: exactly one deletes it.
	r.save(record("rm-race", apcore.StatusCompleted, 1))
	var mu sync.Mutex
	winners := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.recoverInto()
			deleted, err := rm.Remove(r.ctx, "rm-race")
			if err != nil {
				r.errorf("racing Remove: %v", err)
			}
			if deleted {
				mu.Lock()
				winners++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if winners != 1 {
		r.errorf("%d of 8 racing Removes of one record reported deleting it; want exactly 1", winners)
	}
}

// shared returns the store as a SharedStore, or nil.
func (r *run) shared() apcore.SharedStore {
	s, _ := r.store.(apcore.SharedStore)
	return s
}

// stored is a new pending StoredTask.
func stored(id, owner string, resumable bool, submitted int) apcore.StoredTask {
	st := apcore.StoredTask{Info: record(id, apcore.StatusPending, submitted), Owner: owner, Resumable: resumable}
	if resumable {
		st.Inputs = []byte(`{"n":1,"s":"x"}`)
		st.Retry = apcore.RetryConfig{MaxRetries: 2, RetryDelay: time.Second, BackoffMultiplier: 2, MaxRetryDelay: time.Minute}
		st.Info.MaxRetries = 2
		st.Timeout = 3 * time.Second
		st.NotBefore = at(submitted)
		st.Trace = map[string]string{"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
	}
	return st
}

// lease gives owners a lease that lasts past every time the checks use.
func (r *run) lease(s apcore.SharedStore, owners ...string) {
	for _, owner := range owners {
		if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: owner, Expires: at(1_000_000), Create: true}); err != nil {
			r.fatalf("Renew(%s): %v", owner, err)
		}
	}
}

func (r *run) insert(s apcore.SharedStore, st apcore.StoredTask, limit int) bool {
	ok, err := s.Insert(r.ctx, st, limit)
	if err != nil {
		r.fatalf("Insert(%s): %v", st.Info.TaskID, err)
	}
	return ok
}

func checkSharedInsert(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	if !r.insert(s, stored("in-a", "m1", false, 0), 2) || !r.insert(s, stored("in-b", "", true, 1), 2) {
		r.fatalf("Insert under the limit refused")
	}
	if r.insert(s, stored("in-c", "m1", false, 2), 2) {
		r.errorf("Insert at the limit (2 active, limit 2) saved the record")
	}
	if _, err := r.store.Get(r.ctx, "in-c"); !errors.Is(err, apcore.ErrTaskNotFound) {
		r.errorf("a refused Insert left a record behind (Get: %v)", err)
	}
	// Terminal records do not count.
	r.save(record("in-done", apcore.StatusCompleted, 3))
	if r.insert(s, stored("in-d", "m1", false, 4), 2) {
		r.errorf("Insert at the limit saved the record; terminal records must not free a place, active ones fill it")
	}
	if d := sameRecord(stored("in-a", "m1", false, 0).Info, r.get("in-a")); d != nil {
		r.errorf("record after Insert: %v", d)
	}
	if got := ids(r.list("")); !reflect.DeepEqual(got, []string{"in-a", "in-b", "in-done"}) {
		r.errorf("List after Insert = %v, want [in-a in-b in-done]", got)
	}
	if r.insert(s, stored("in-zero", "m1", false, 5), 0) {
		r.errorf("Insert with limit 0 saved the record")
	}
}

func checkSharedAdmissionRace(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	const limit, racers, each = 10, 8, 4
	for round := range 5 {
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted := 0
		for g := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer r.recoverInto()
				for i := range each {
					id := fmt.Sprintf("race-%d-%d-%d", round, g, i)
					ok, err := s.Insert(r.ctx, stored(id, fmt.Sprintf("m%d", g), g%2 == 0, i), limit)
					if err != nil {
						r.errorf("racing Insert: %v", err)
						return
					}
					if ok {
						mu.Lock()
						accepted++
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		active := len(r.list(apcore.StatusPending)) + len(r.list(apcore.StatusRunning))
		if accepted != limit || active != limit {
			r.fatalf("round %d: %d of %d racing Inserts accepted and %d records active, limit %d: want exactly the limit",
				round, accepted, racers*each, active, limit)
		}
		// End every task so the next round starts empty of active records.
		for _, t := range r.list(apcore.StatusPending) {
			t.Status, t.CompletedAt = apcore.StatusCancelled, at(100)
			r.save(t)
		}
	}
}

func checkSharedUpdate(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.insert(s, stored("up-a", "m1", false, 0), 10)
	run := stored("up-a", "m1", false, 0)
	run.Info = record("up-a", apcore.StatusRunning, 0)
	run.Info.Progress = 5
	if ok, err := s.Update(r.ctx, run, "m2"); err != nil || ok {
		r.errorf("Update by a manager that does not hold the task: ok=%v err=%v, want false", ok, err)
	}
	if got := r.get("up-a"); got.Status != apcore.StatusPending {
		r.errorf("a refused Update changed the record to %s", got.Status)
	}
	if ok, err := s.Update(r.ctx, run, "m1"); err != nil || !ok {
		r.errorf("Update by the holder: ok=%v err=%v, want true", ok, err)
	}
	if d := sameRecord(run.Info, r.get("up-a")); d != nil {
		r.errorf("record after Update: %v", d)
	}
	done := run
	done.Info = record("up-a", apcore.StatusCompleted, 0)
	done.Info.Result = map[string]any{"n": 1.0}
	if ok, err := s.Update(r.ctx, done, "m1"); err != nil || !ok {
		r.errorf("terminal Update by the holder: ok=%v err=%v, want true", ok, err)
	}
	late := run
	late.Info = record("up-a", apcore.StatusFailed, 0)
	if ok, err := s.Update(r.ctx, late, "m1"); err != nil || ok {
		r.errorf("Update over a terminal record: ok=%v err=%v, want false", ok, err)
	}
	if got := r.get("up-a"); got.Status != apcore.StatusCompleted {
		r.errorf("an Update overwrote a terminal record with %s", got.Status)
	}
	absent := stored("up-absent", "m1", false, 1)
	if ok, err := s.Update(r.ctx, absent, "m1"); err != nil || ok {
		r.errorf("Update of an absent record: ok=%v err=%v, want false", ok, err)
	}
	if _, err := r.store.Get(r.ctx, "up-absent"); !errors.Is(err, apcore.ErrTaskNotFound) {
		r.errorf("an Update of an absent record created it")
	}
	// A resumable task handed back: held by no one, due later, claimable
	// only then.
	r.lease(s, "m1", "m2")
	r.insert(s, stored("up-r", "", true, 2), 10)
	claimed, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 1, Now: at(2)})
	if err != nil || len(claimed) != 1 {
		r.fatalf("Claim of one due task: %d claimed, err %v", len(claimed), err)
	}
	back := claimed[0]
	back.Info.Status, back.Info.RetryCount, back.Owner, back.NotBefore = apcore.StatusPending, 1, "", at(60)
	if ok, err := s.Update(r.ctx, back, "m1"); err != nil || !ok {
		r.fatalf("Update handing a resumable task back: ok=%v err=%v", ok, err)
	}
	if early, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m2", Limit: 5, Now: at(59)}); err != nil || len(early) != 0 {
		r.errorf("Claim before NotBefore took %d task(s) (err %v), want none", len(early), err)
	}
	again, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m2", Limit: 5, Now: at(60)})
	if err != nil || len(again) != 1 || again[0].Info.RetryCount != 1 {
		r.errorf("Claim at NotBefore: %d task(s), err %v; want the handed-back task with RetryCount 1", len(again), err)
	}
}

func checkSharedClaim(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m2", "m3")
	r.insert(s, stored("cl-owned", "m1", false, 0), 100) // held, not resumable: never claimed
	for i := range 4 {
		r.insert(s, stored(fmt.Sprintf("cl-%d", i), "", true, 1+i), 100)
	}
	future := stored("cl-later", "", true, 9)
	future.NotBefore = at(1000)
	r.insert(s, future, 100)
	first, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m2", Limit: 3, Now: at(50)})
	if err != nil {
		r.fatalf("Claim: %v", err)
	}
	if got := claimedIDs(first); !reflect.DeepEqual(got, []string{"cl-0", "cl-1", "cl-2"}) {
		r.errorf("Claim(3) took %v, want the three oldest due resumable tasks [cl-0 cl-1 cl-2]", got)
	}
	want := stored("cl-0", "m2", true, 1)
	want.Info.Status, want.Info.StartedAt = apcore.StatusRunning, at(50)
	if len(first) > 0 {
		got := first[0]
		if d := sameRecord(want.Info, got.Info); d != nil {
			r.errorf("a claimed record: %v", d)
		}
		if got.Owner != "m2" || !got.Resumable || string(got.Inputs) != string(want.Inputs) ||
			got.Retry != want.Retry || got.Timeout != want.Timeout || !reflect.DeepEqual(got.Trace, want.Trace) {
			r.errorf("a claimed task: owner %q resumable %v inputs %s retry %+v timeout %v trace %v; want %q true %s %+v %v %v",
				got.Owner, got.Resumable, got.Inputs, got.Retry, got.Timeout, got.Trace,
				want.Owner, want.Inputs, want.Retry, want.Timeout, want.Trace)
		}
		if stored := r.get("cl-0"); stored.Status != apcore.StatusRunning || !stored.StartedAt.Equal(at(50)) {
			r.errorf("a claimed record reads back %s started %v, want running started %v", stored.Status, stored.StartedAt, at(50))
		}
	}
	rest, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m3", Limit: 10, Now: at(50)})
	if err != nil {
		r.fatalf("Claim: %v", err)
	}
	if got := claimedIDs(rest); !reflect.DeepEqual(got, []string{"cl-3"}) {
		r.errorf("second Claim took %v, want [cl-3] (cl-later is not due, cl-owned is not resumable)", got)
	}
	if none, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m3", Limit: 0, Now: at(50)}); err != nil || len(none) != 0 {
		r.errorf("Claim(0) took %d task(s), err %v", len(none), err)
	}
	// A record that started before keeps its first start.
	again := stored("cl-again", "", true, 20)
	again.Info.StartedAt, again.Info.RetryCount = at(21), 1
	r.insert(s, again, 100)
	got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m3", Limit: 1, Now: at(70)})
	if err != nil || len(got) != 1 || !got[0].Info.StartedAt.Equal(at(21)) {
		r.errorf("claiming a retried task: %d claimed, err %v; want StartedAt kept at %v", len(got), err, at(21))
	}
}

// The modules of checkSharedClaimByModule; c's id needs escaping in JSON
// (a quote, a backslash, HTML characters, a letter beyond ASCII), so that
// a store which matches module ids in an encoded form must get it right.
const (
	moduleA = "storetest.a"
	moduleB = "storetest.b"
	moduleC = `storetest.c "q" \ <&> ü`
)

// A Claim with Modules takes only tasks of those modules, oldest first,
// and leaves the others claimable; an empty, non-nil Modules takes
// nothing; nil takes any module.
func checkSharedClaimByModule(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m1", "m2")
	modules := []string{moduleB, moduleA, moduleC, moduleB, moduleA, moduleC}
	for i, m := range modules {
		st := stored(fmt.Sprintf("cm-%d", i), "", true, 1+i)
		st.Info.ModuleID = m
		r.insert(s, st, 100)
	}
	claim := func(owner string, limit int, mods []string) []apcore.StoredTask {
		got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: owner, Limit: limit, Now: at(50), Modules: mods})
		if err != nil {
			r.fatalf("Claim(%s, %d, modules %q): %v", owner, limit, mods, err)
		}
		for _, t := range got {
			if t.Owner != owner || t.Info.Status != apcore.StatusRunning {
				r.errorf("Claim(modules %q) handed back %s held by %q in state %s, want held by %s, running",
					mods, t.Info.TaskID, t.Owner, t.Info.Status, owner)
			}
			if want := modules[taskIndex(t.Info.TaskID)]; t.Info.ModuleID != want {
				r.errorf("Claim handed back %s of module %q, want %q", t.Info.TaskID, t.Info.ModuleID, want)
			}
			if mods != nil && !slices.Contains(mods, t.Info.ModuleID) {
				r.errorf("Claim of modules %q took %s, of module %q", mods, t.Info.TaskID, t.Info.ModuleID)
			}
		}
		return got
	}
	ac := []string{moduleA, moduleC}
	if got := claimedIDs(claim("m1", 1, ac)); !slices.Equal(got, []string{"cm-1"}) {
		r.errorf("Claim(1) of modules [a c] took %v, want [cm-1]: the oldest task of those modules, past the older one of b", got)
	}
	if got := claimedIDs(claim("m1", 10, ac)); !slices.Equal(got, []string{"cm-2", "cm-4", "cm-5"}) {
		r.errorf("Claim(10) of modules [a c] took %v, want the rest of theirs [cm-2 cm-4 cm-5]", got)
	}
	if got := claimedIDs(claim("m2", 10, []string{})); len(got) != 0 {
		r.errorf("Claim with an empty, non-nil Modules took %v, want nothing", got)
	}
	if got := claimedIDs(claim("m2", 10, []string{"storetest.none", "storetest.c"})); len(got) != 0 {
		r.errorf("Claim of modules no task has took %v, want nothing", got)
	}
	for _, id := range []string{"cm-0", "cm-3"} {
		if got := r.get(id); got.Status != apcore.StatusPending {
			r.errorf("task %s of module b, skipped by the Claims of [a c], is %s, want pending", id, got.Status)
		}
	}
	if got := claimedIDs(claim("m2", 10, nil)); !slices.Equal(got, []string{"cm-0", "cm-3"}) {
		r.errorf("Claim with nil Modules took %v, want the tasks of b that the others left [cm-0 cm-3]", got)
	}
}

// taskIndex is the number at the end of a checker's task id ("cm-4": 4).
func taskIndex(id string) int {
	var n int
	if i := strings.LastIndexByte(id, '-'); i >= 0 {
		_, _ = fmt.Sscanf(id[i+1:], "%d", &n)
	}
	return n
}

// An owner without a live lease claims nothing: a manager whose lease
// Recover took must not take tasks under that id again.
func checkSharedClaimNeedsLease(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.insert(s, stored("nl-a", "", true, 0), 100)
	if got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m-none", Limit: 5, Now: at(10)}); err != nil || len(got) != 0 {
		r.errorf("Claim by an owner with no lease took %v (err %v), want nothing", claimedIDs(got), err)
	}
	if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m-lapsed", Expires: at(5), Create: true}); err != nil {
		r.fatalf("Renew: %v", err)
	}
	if got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m-lapsed", Limit: 5, Now: at(10)}); err != nil || len(got) != 0 {
		r.errorf("Claim by an owner whose lease ended took %v (err %v), want nothing", claimedIDs(got), err)
	}
	if got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m-lapsed", Limit: 5, Now: at(5)}); err != nil || !slices.Equal(claimedIDs(got), []string{"nl-a"}) {
		r.errorf("Claim by an owner whose lease ends at now took %v (err %v), want [nl-a]", claimedIDs(got), err)
	}
}

func claimedIDs(ts []apcore.StoredTask) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.Info.TaskID)
	}
	return out
}

func checkSharedClaimRace(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	const tasks, claimers = 60, 6
	for c := range claimers {
		r.lease(s, fmt.Sprintf("m%d", c))
	}
	for i := range tasks {
		r.insert(s, stored(fmt.Sprintf("cr-%02d", i), "", true, i), 1000)
	}
	var mu sync.Mutex
	seen := map[string]string{}
	var wg sync.WaitGroup
	for c := range claimers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.recoverInto()
			owner := fmt.Sprintf("m%d", c)
			for range 20 {
				got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: owner, Limit: 3, Now: at(1000)})
				if err != nil {
					r.errorf("racing Claim: %v", err)
					return
				}
				mu.Lock()
				for _, t := range got {
					if prev, dup := seen[t.Info.TaskID]; dup {
						r.errorf("task %s claimed by %s and by %s", t.Info.TaskID, prev, owner)
					}
					seen[t.Info.TaskID] = owner
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != tasks {
		r.errorf("racing Claims took %d of %d tasks", len(seen), tasks)
	}
}

func checkSharedLeases(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	if ok, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m1", Expires: at(100)}); err != nil || ok {
		r.errorf("Renew of a lease never made: ok=%v err=%v, want false", ok, err)
	}
	if ok, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m1", Expires: at(100), Create: true}); err != nil || !ok {
		r.errorf("Renew with create: ok=%v err=%v, want true", ok, err)
	}
	if ok, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m1", Expires: at(200)}); err != nil || !ok {
		r.errorf("Renew of a live lease: ok=%v err=%v, want true", ok, err)
	}
	if err := s.Release(r.ctx, "m1"); err != nil {
		r.errorf("Release: %v", err)
	}
	if ok, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m1", Expires: at(300)}); err != nil || ok {
		r.errorf("Renew after Release: ok=%v err=%v, want false", ok, err)
	}
	if err := s.Release(r.ctx, "m-never"); err != nil {
		r.errorf("Release of an absent lease: %v", err)
	}
	// A lapsed lease that Recover took cannot be renewed.
	if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m2", Expires: at(100), Create: true}); err != nil {
		r.fatalf("Renew: %v", err)
	}
	if _, err := s.Recover(r.ctx, at(101)); err != nil {
		r.fatalf("Recover: %v", err)
	}
	if ok, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "m2", Expires: at(400)}); err != nil || ok {
		r.errorf("Renew of a lease Recover ended: ok=%v err=%v, want false", ok, err)
	}
}

func checkSharedRecover(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	for _, l := range []struct {
		owner string
		until int
	}{{"dead", 100}, {"live", 1000}} {
		if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: l.owner, Expires: at(l.until), Create: true}); err != nil {
			r.fatalf("Renew(%s): %v", l.owner, err)
		}
	}
	r.insert(s, stored("rc-dead-plain", "dead", false, 0), 100)
	r.insert(s, stored("rc-dead-res", "", true, 1), 100)
	r.insert(s, stored("rc-live", "live", false, 2), 100)
	r.insert(s, stored("rc-nolease", "ghost", false, 3), 100) // held by an owner with no lease
	if _, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "dead", Limit: 1, Now: at(5)}); err != nil {
		r.fatalf("Claim: %v", err)
	}
	r.save(record("rc-done", apcore.StatusCompleted, 4))
	n, err := s.Recover(r.ctx, at(50)) // nothing has lapsed yet but the ghost's
	if err != nil {
		r.fatalf("Recover: %v", err)
	}
	if n != 1 || r.get("rc-nolease").Status != apcore.StatusFailed {
		r.errorf("Recover before any lease lapsed changed %d record(s) (rc-nolease %s); want only the one held by an owner with no lease",
			n, r.get("rc-nolease").Status)
	}
	n, err = s.Recover(r.ctx, at(200))
	if err != nil {
		r.fatalf("Recover: %v", err)
	}
	if n != 2 {
		r.errorf("Recover after the lease lapsed changed %d records, want 2", n)
	}
	plain := r.get("rc-dead-plain")
	if plain.Status != apcore.StatusFailed || plain.ErrorCode != apcore.CodeTaskAbandoned || plain.Error == "" || plain.CompletedAt.IsZero() {
		r.errorf("a lapsed manager's non-resumable task: %s code %q error %q completed %v; want failed TASK_ABANDONED with a message and CompletedAt",
			plain.Status, plain.ErrorCode, plain.Error, plain.CompletedAt)
	}
	res := r.get("rc-dead-res")
	if res.Status != apcore.StatusPending || res.RetryCount != 0 {
		r.errorf("a lapsed manager's resumable task: %s retry %d; want pending, RetryCount unchanged", res.Status, res.RetryCount)
	}
	if got := r.get("rc-live"); got.Status != apcore.StatusPending {
		r.errorf("Recover touched a live manager's task: %s", got.Status)
	}
	if got := r.get("rc-done"); got.Status != apcore.StatusCompleted {
		r.errorf("Recover touched a terminal record: %s", got.Status)
	}
	claimed, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "live", Limit: 5, Now: at(201)})
	if err != nil || !slices.Equal(claimedIDs(claimed), []string{"rc-dead-res"}) {
		r.errorf("the recovered resumable task is not claimable: %v (err %v)", claimedIDs(claimed), err)
	}
	// The lapsed manager's late writes are refused.
	late := stored("rc-dead-plain", "dead", false, 0)
	late.Info = record("rc-dead-plain", apcore.StatusCompleted, 0)
	if ok, err := s.Update(r.ctx, late, "dead"); err != nil || ok {
		r.errorf("a lapsed manager's late Update: ok=%v err=%v, want false", ok, err)
	}
	lateRes := stored("rc-dead-res", "dead", true, 1)
	lateRes.Info = record("rc-dead-res", apcore.StatusCompleted, 1)
	if ok, err := s.Update(r.ctx, lateRes, "dead"); err != nil || ok {
		r.errorf("a lapsed manager's late Update of a task claimed since: ok=%v err=%v, want false", ok, err)
	}
	if n, err := s.Recover(r.ctx, at(300)); err != nil || n != 0 {
		r.errorf("a second Recover changed %d record(s) (err %v), want 0", n, err)
	}
}

func checkSharedLost(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.insert(s, stored("lo-held", "m1", false, 0), 100)
	r.insert(s, stored("lo-cancelled", "m1", false, 1), 100)
	r.insert(s, stored("lo-other", "m2", false, 2), 100)
	cs := s.(apcore.ConditionalSaver)
	cancelled := record("lo-cancelled", apcore.StatusCancelled, 1)
	if ok, err := cs.SaveIf(r.ctx, cancelled, apcore.StatusPending, apcore.StatusRunning); err != nil || !ok {
		r.fatalf("SaveIf cancel: ok=%v err=%v", ok, err)
	}
	lost, err := s.Lost(r.ctx, "m1", []string{"lo-held", "lo-cancelled", "lo-other", "lo-gone"})
	if err != nil {
		r.fatalf("Lost: %v", err)
	}
	slices.Sort(lost)
	if want := []string{"lo-cancelled", "lo-gone", "lo-other"}; !slices.Equal(lost, want) {
		r.errorf("Lost = %v, want %v", lost, want)
	}
	if none, err := s.Lost(r.ctx, "m1", nil); err != nil || len(none) != 0 {
		r.errorf("Lost of no ids = %v (err %v), want none", none, err)
	}
}

func checkSharedOrphans(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "self", Expires: at(1000), Create: true}); err != nil {
		r.fatalf("Renew: %v", err)
	}
	if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "dead", Expires: at(10), Create: true}); err != nil {
		r.fatalf("Renew: %v", err)
	}
	r.insert(s, stored("or-self", "self", false, 0), 100)
	r.insert(s, stored("or-dead", "dead", false, 1), 100)
	r.insert(s, stored("or-ghost", "ghost", false, 2), 100)
	r.insert(s, stored("or-pool", "", true, 3), 100)
	later := stored("or-later", "", true, 4) // held by no one, due after Now: waits in the store
	later.NotBefore = at(60)
	r.insert(s, later, 100)
	r.save(record("or-done", apcore.StatusFailed, 4))
	orphans, err := s.Orphans(r.ctx, apcore.OrphanQuery{Self: "self", Now: at(50)})
	if err != nil {
		r.fatalf("Orphans: %v", err)
	}
	if got := ids(orphans); !reflect.DeepEqual(got, []string{"or-dead", "or-ghost", "or-pool"}) {
		r.errorf("Orphans with no other live manager = %v, want [or-dead or-ghost or-pool] (or-later is due after Now: not an orphan)", got)
	}
	if _, err := s.Renew(r.ctx, apcore.LeaseRequest{Owner: "other", Expires: at(1000), Create: true}); err != nil {
		r.fatalf("Renew: %v", err)
	}
	orphans, err = s.Orphans(r.ctx, apcore.OrphanQuery{Self: "self", Now: at(50)})
	if err != nil {
		r.fatalf("Orphans: %v", err)
	}
	if got := ids(orphans); !reflect.DeepEqual(got, []string{"or-dead", "or-ghost"}) {
		r.errorf("Orphans while another manager lives = %v, want [or-dead or-ghost]: the task held by no one is the live manager's to claim", got)
	}
	// A manager that has ended its lease asks with no self.
	for _, owner := range []string{"self", "other"} {
		if err := s.Release(r.ctx, owner); err != nil {
			r.fatalf("Release: %v", err)
		}
	}
	orphans, err = s.Orphans(r.ctx, apcore.OrphanQuery{Self: "", Now: at(50)})
	if err != nil {
		r.fatalf("Orphans: %v", err)
	}
	if got := ids(orphans); !reflect.DeepEqual(got, []string{"or-self", "or-dead", "or-ghost", "or-pool"}) {
		r.errorf("Orphans with no self and no live lease = %v, want every active record but the one due later [or-self or-dead or-ghost or-pool]", got)
	}
	orphans, err = s.Orphans(r.ctx, apcore.OrphanQuery{Self: "", Now: at(60)})
	if err != nil {
		r.fatalf("Orphans: %v", err)
	}
	if got := ids(orphans); !reflect.DeepEqual(got, []string{"or-self", "or-dead", "or-ghost", "or-pool", "or-later"}) {
		r.errorf("Orphans at or-later's time = %v, want [or-self or-dead or-ghost or-pool or-later]", got)
	}
}

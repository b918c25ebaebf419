package storetest

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// The third stage's checks: RunAt, UniqueKey and Priority kept by every
// reader; unique keys atomic in Insert; claims by priority; scheduled
// records not claimed before their time.

// fmtAt prints an optional time.
func fmtAt(t *time.Time) string {
	if t == nil {
		return "nil"
	}
	return t.String()
}

// withLater is st with a RunAt, a unique key and a priority.
func withLater(st apcore.StoredTask, runAt time.Time, key string, priority int) apcore.StoredTask {
	if !runAt.IsZero() {
		st.Info.RunAt = &runAt
		if st.Resumable {
			st.NotBefore = runAt
		}
	}
	st.Info.UniqueKey, st.Info.Priority = key, priority
	return st
}

// checkLaterFields: RunAt (to the microsecond), UniqueKey and Priority come
// back from Get, List and Claim as they went in, through Save and Insert.
func checkLaterFields(r *run) {
	plain := record("lf-plain", apcore.StatusCompleted, 1)
	runAt := at(30).Add(654321 * time.Microsecond)
	plain.RunAt, plain.UniqueKey, plain.Priority = &runAt, `key "é" \ <&>`, -100
	r.save(plain)
	if d := sameRecord(plain, r.get(plain.TaskID)); d != nil {
		r.errorf("Save then Get: %v", d)
	}
	for _, got := range r.list(apcore.StatusCompleted) {
		if got.TaskID == plain.TaskID {
			if d := sameRecord(plain, got); d != nil {
				r.errorf("Save then List: %v", d)
			}
		}
	}
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m1")
	st := withLater(stored("lf-res", "", true, 2), at(40), "lf-key", 100)
	r.insert(s, st, 100)
	if d := sameRecord(st.Info, r.get(st.Info.TaskID)); d != nil {
		r.errorf("Insert then Get: %v", d)
	}
	claimed, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 1, Now: at(41)})
	if err != nil || len(claimed) != 1 {
		r.fatalf("Claim of a due scheduled task: %d claimed, err %v", len(claimed), err)
	}
	want := st.Info
	want.Status, want.StartedAt = apcore.StatusRunning, at(41)
	if d := sameRecord(want, claimed[0].Info); d != nil {
		r.errorf("Claim: %v", d)
	}
}

// dupOf returns the id a duplicate error names, or "" when err is not one.
func dupOf(err error) string {
	var dup *apcore.DuplicateError
	if errors.As(err, &dup) && errors.Is(err, apcore.ErrDuplicateTask) {
		return dup.TaskID
	}
	return ""
}

// checkUniqueKey: a pending, running or completed record holds its key; a
// failed, cancelled or removed one does not; keys are exact strings.
func checkUniqueKey(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m1")
	insert := func(id, key string) (bool, error) {
		return s.Insert(r.ctx, withLater(stored(id, "m1", false, 1), time.Time{}, key, 0), 100)
	}
	if ok, err := insert("uk-1", "k"); !ok || err != nil {
		r.fatalf("first Insert with key k: %v, %v", ok, err)
	}
	for _, key := range []string{"K", "k ", "k2"} {
		if ok, err := insert("uk-other-"+key, key); !ok || err != nil {
			r.errorf("Insert with key %q (k is held): %v, %v; keys are exact strings", key, ok, err)
		}
	}
	ok, err := insert("uk-2", "k")
	if ok || dupOf(err) != "uk-1" {
		r.errorf("second Insert with key k: %v, %v; want false and a *DuplicateError naming uk-1 that matches ErrDuplicateTask", ok, err)
	}
	if _, gerr := s.Get(r.ctx, "uk-2"); !errors.Is(gerr, apcore.ErrTaskNotFound) {
		r.errorf("a refused duplicate was saved (Get: %v)", gerr)
	}
	// Running, then completed: still held.
	info := r.get("uk-1")
	info.Status, info.StartedAt = apcore.StatusRunning, at(2)
	r.update(s, info, "m1")
	if _, err := insert("uk-3", "k"); dupOf(err) != "uk-1" {
		r.errorf("Insert with the key of a running record: %v; want a duplicate of uk-1", err)
	}
	info.Status, info.CompletedAt, info.Result = apcore.StatusCompleted, at(3), "done"
	r.update(s, info, "m1")
	if _, err := insert("uk-4", "k"); dupOf(err) != "uk-1" {
		r.errorf("Insert with the key of a completed record: %v; want a duplicate of uk-1", err)
	}
	// Failed and cancelled records let the key go; so does a removed one.
	for i, end := range []apcore.TaskStatus{apcore.StatusFailed, apcore.StatusCancelled} {
		key := fmt.Sprintf("k-%s", end)
		id := fmt.Sprintf("uk-%s-a", end)
		if ok, err := insert(id, key); !ok || err != nil {
			r.fatalf("Insert %s: %v, %v", id, ok, err)
		}
		x := r.get(id)
		x.Status, x.CompletedAt = end, at(4+i)
		if end == apcore.StatusFailed {
			x.Error, x.ErrorCode = "boom", apcore.CodeModuleExecuteError
		}
		r.update(s, x, "m1")
		if ok, err := insert(fmt.Sprintf("uk-%s-b", end), key); !ok || err != nil {
			r.errorf("Insert with the key of a %s record: %v, %v; want it saved", end, ok, err)
		}
	}
	if err := s.Delete(r.ctx, "uk-1"); err != nil {
		r.fatalf("Delete: %v", err)
	}
	if ok, err := insert("uk-5", "k"); !ok || err != nil {
		r.errorf("Insert with the key of a deleted record: %v, %v; want it saved", ok, err)
	}
	if _, err := insert("uk-6", "k"); dupOf(err) != "uk-5" {
		r.errorf("Insert after the key moved to uk-5: %v; want a duplicate of uk-5", err)
	}
}

// update writes info as holder, which must hold it.
func (r *run) update(s apcore.SharedStore, info apcore.TaskInfo, holder string) {
	ok, err := s.Update(r.ctx, apcore.StoredTask{Info: info, Owner: holder}, holder)
	if err != nil || !ok {
		r.fatalf("Update(%s to %s): %v, %v", info.TaskID, info.Status, ok, err)
	}
}

// checkUniqueKeyRace: racing Inserts of one key make exactly one record,
// and every other one names it.
func checkUniqueKeyRace(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	const n = 16
	var wg sync.WaitGroup
	oks := make([]bool, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			defer r.recoverInto()
			st := withLater(stored(fmt.Sprintf("ur-%02d", i), "", true, i), time.Time{}, "race", 0)
			oks[i], errs[i] = s.Insert(r.ctx, st, 1000)
		})
	}
	wg.Wait()
	winner := ""
	for i := range n {
		if oks[i] {
			if winner != "" {
				r.errorf("two Inserts of key race were saved: %s and ur-%02d", winner, i)
			}
			winner = fmt.Sprintf("ur-%02d", i)
		}
	}
	if winner == "" {
		r.fatalf("no Insert of key race was saved: %v", errs)
	}
	for i := range n {
		if !oks[i] && dupOf(errs[i]) != winner {
			r.errorf("Insert ur-%02d: %v; want a duplicate of %s", i, errs[i], winner)
		}
	}
	if all := r.list(""); len(all) != 1 {
		r.errorf("%d records after the race, want 1", len(all))
	}
}

// checkClaimByPriority: higher priorities first, then insertion order;
// a record not due yet is not claimed whatever its priority.
func checkClaimByPriority(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m1")
	prios := []int{0, 5, -3, 5, 0, 10, -100, 100}
	for i, p := range prios {
		r.insert(s, withLater(stored(fmt.Sprintf("cp-%d", i), "", true, i), time.Time{}, "", p), 100)
	}
	r.insert(s, withLater(stored("cp-later", "", true, 1), at(1000), "", 100), 100)
	got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 3, Now: at(50)})
	if err != nil {
		r.fatalf("Claim: %v", err)
	}
	if ids := claimedIDs(got); !slices.Equal(ids, []string{"cp-7", "cp-5", "cp-1"}) {
		r.errorf("Claim(3) took %v, want [cp-7 cp-5 cp-1] (priority 100, 10, then the older 5)", ids)
	}
	rest, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 10, Now: at(50)})
	if err != nil {
		r.fatalf("Claim: %v", err)
	}
	if ids := claimedIDs(rest); !slices.Equal(ids, []string{"cp-3", "cp-0", "cp-4", "cp-2", "cp-6"}) {
		r.errorf("Claim(10) took %v, want [cp-3 cp-0 cp-4 cp-2 cp-6] (cp-later is not due)", ids)
	}
}

// checkScheduled: a resumable record due later is pending until then, not
// claimed before, claimed at its time; a scheduled record may be
// cancelled before its time like any pending one.
func checkScheduled(r *run) {
	s := r.shared()
	if s == nil {
		return
	}
	r.lease(s, "m1")
	r.insert(s, withLater(stored("sc-a", "", true, 1), at(100), "", 0), 100)
	r.insert(s, withLater(stored("sc-b", "", true, 2), at(100), "", 0), 100)
	if got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 10, Now: at(99)}); err != nil || len(got) != 0 {
		r.errorf("Claim before the tasks' time took %v, err %v", claimedIDs(got), err)
	}
	b := r.get("sc-b")
	b.Status, b.CompletedAt = apcore.StatusCancelled, at(50)
	if ok, err := r.store.(apcore.ConditionalSaver).SaveIf(r.ctx, b, apcore.StatusPending); err != nil || !ok {
		r.errorf("cancelling a scheduled record with SaveIf(pending): %v, %v", ok, err)
	}
	got, err := s.Claim(r.ctx, apcore.ClaimRequest{Owner: "m1", Limit: 10, Now: at(100)})
	if err != nil || !slices.Equal(claimedIDs(got), []string{"sc-a"}) {
		r.errorf("Claim at the tasks' time took %v, err %v; want [sc-a] (sc-b was cancelled)", claimedIDs(got), err)
	}
}

package apcore

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// FuzzMemoryStore runs a random sequence of store operations on a
// MemoryStore and on a plain model of the contract, and compares every
// answer.
func FuzzMemoryStore(f *testing.F) {
	f.Add([]byte{0, 1, 2, 0, 2, 3, 1, 1, 4, 5, 3, 0, 6, 1})
	f.Add([]byte("save get list delete count saveif expired"))
	f.Add([]byte{9, 0, 2, 9, 1, 4, 9, 2, 3, 7, 1, 1, 2, 5, 8, 0, 5, 200, 7, 3, 4, 1, 9, 3, 2, 8, 1, 2, 255, 7, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, ops []byte) {
		ctx := context.Background()
		s := NewMemoryStore()
		var order []string // the model: ids in insertion order
		model := map[string]TaskInfo{}
		base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
		bulk := 0
		next := func() byte {
			if len(ops) == 0 {
				return 0
			}
			b := ops[0]
			ops = ops[1:]
			return b
		}
		for len(ops) > 0 {
			op, id := next()%10, fmt.Sprintf("id-%d", next()%6)
			st := allStatuses[int(next())%len(allStatuses)]
			info := TaskInfo{TaskID: id, ModuleID: "m", Status: st, SubmittedAt: base}
			if st.IsTerminal() && next()%4 != 0 {
				info.CompletedAt = base.Add(time.Duration(next()) * time.Second)
			}
			switch op {
			case 0: // Save
				if err := s.Save(ctx, info); err != nil {
					t.Fatal(err)
				}
				if _, ok := model[id]; !ok {
					order = append(order, id)
				}
				model[id] = info
			case 1: // SaveIf
				from := []TaskStatus{allStatuses[int(next())%len(allStatuses)], allStatuses[int(next())%len(allStatuses)]}
				saved, err := s.SaveIf(ctx, info, from...)
				if err != nil {
					t.Fatal(err)
				}
				cur, ok := model[id]
				want := ok && slices.Contains(from, cur.Status)
				if saved != want {
					t.Fatalf("SaveIf(%s %s from %v) = %v, model says %v", id, st, from, saved, want)
				}
				if want {
					model[id] = info
				}
			case 2: // Delete
				if err := s.Delete(ctx, id); err != nil {
					t.Fatal(err)
				}
				if _, ok := model[id]; ok {
					delete(model, id)
					order = slices.DeleteFunc(order, func(x string) bool { return x == id })
				}
			case 3: // Get
				got, err := s.Get(ctx, id)
				want, ok := model[id]
				if ok != (err == nil) || (ok && (got.Status != want.Status || !got.CompletedAt.Equal(want.CompletedAt))) {
					t.Fatalf("Get(%s) = %v %v, model has %v %v", id, got, err, want, ok)
				}
			case 4: // List
				filter := st
				if next()%2 == 0 {
					filter = ""
				}
				got, err := s.List(ctx, filter)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, x := range order {
					if filter == "" || model[x].Status == filter {
						want = append(want, x)
					}
				}
				if g := idsOf(got); !slices.Equal(g, want) {
					t.Fatalf("List(%q) = %v, model says %v", filter, g, want)
				}
			case 5: // ListExpired
				before := base.Add(time.Duration(next()) * time.Second)
				got, err := s.ListExpired(ctx, before)
				if err != nil {
					t.Fatal(err)
				}
				var want []string
				for _, x := range order {
					r := model[x]
					if r.Status.IsTerminal() && !r.CompletedAt.IsZero() && r.CompletedAt.Before(before) {
						want = append(want, x)
					}
				}
				if g := idsOf(got); !slices.Equal(g, want) {
					t.Fatalf("ListExpired(%v) = %v, model says %v", before, g, want)
				}
			case 7: // every page of a ListPage
				opts := ListOptions{Limit: []int{1, 3, 50, 1000}[next()%4], Newest: next()%2 == 0}
				if next()%2 == 0 {
					opts.Status = st
				}
				var want []string
				for _, x := range order {
					if opts.Status == "" || model[x].Status == opts.Status {
						want = append(want, x)
					}
				}
				if opts.Newest {
					slices.Reverse(want)
				}
				var got []string
				for pages := 0; ; pages++ {
					page, err := s.ListPage(ctx, opts)
					if err != nil {
						t.Fatal(err)
					}
					if len(page.Tasks) > opts.Limit || pages > len(want)+1 {
						t.Fatalf("ListPage(%+v): %d records on page %d", opts, len(page.Tasks), pages)
					}
					got = append(got, idsOf(page.Tasks)...)
					if page.Next == "" {
						break
					}
					opts.After = page.Next
				}
				if !slices.Equal(got, want) {
					t.Fatalf("pages of %+v = %v, model says %v", opts, got, want)
				}
			case 8: // Sweep
				req := SweepRequest{Before: base.Add(time.Duration(next()) * time.Second), Limit: 1 + int(next()%80)}
				n, err := s.Sweep(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				var expired []string
				for _, x := range order {
					r := model[x]
					ref := r.CompletedAt
					if ref.IsZero() {
						ref = r.SubmittedAt
					}
					if r.Status.IsTerminal() && ref.Before(req.Before) {
						expired = append(expired, x)
					}
				}
				if n != min(len(expired), req.Limit) {
					t.Fatalf("Sweep(%+v) deleted %d, model has %d expired", req, n, len(expired))
				}
				for _, x := range expired {
					if _, err := s.Get(ctx, x); err != nil {
						delete(model, x)
						order = slices.DeleteFunc(order, func(y string) bool { return y == x })
					}
				}
				if left, _ := s.Count(ctx); left != len(model) {
					t.Fatalf("Sweep deleted records it did not count: %d left, model has %d", left, len(model))
				}
			case 9: // many new records, to fill and empty blocks
				for range 70 {
					bulk++
					x := info
					x.TaskID = fmt.Sprintf("bulk-%d", bulk)
					if err := s.Save(ctx, x); err != nil {
						t.Fatal(err)
					}
					order = append(order, x.TaskID)
					model[x.TaskID] = x
				}
			case 6: // Count
				sets := [][]TaskStatus{nil, {st}, activeStatuses, {st, StatusCompleted, st}}
				set := sets[int(next())%len(sets)]
				got, err := s.Count(ctx, set...)
				if err != nil {
					t.Fatal(err)
				}
				want := 0
				for _, r := range model {
					if len(set) == 0 || slices.Contains(set, r.Status) {
						want++
					}
				}
				if got != want {
					t.Fatalf("Count(%v) = %d, model says %d", set, got, want)
				}
			}
		}
	})
}

func idsOf(infos []TaskInfo) []string {
	var out []string
	for _, i := range infos {
		out = append(out, i.TaskID)
	}
	return out
}

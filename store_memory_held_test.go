package apcore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// heldByWalk counts, by reading every record, the active records each
// owner holds: what heldCounts must say.
func heldByWalk(s *MemoryStore) map[string]int64 {
	out := map[string]int64{}
	for i := range s.records.shards {
		sh := &s.records.shards[i]
		sh.mu.Lock()
		for _, r := range sh.m {
			if r.holder != nil && r.info.Status.IsActive() {
				out[r.holder.owner]++
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// Every write that changes a record's owner or state, or removes it, keeps
// the per-owner counts equal to what the records say, in random sequences
// of every SharedStore and TaskStore write.
func TestMemoryHeldCountsFollowTheRecords(t *testing.T) {
	ctx := context.Background()
	owners := []string{"", "a", "b", "c"}
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		s := NewMemoryStore()
		now := base
		var ids []string
		pick := func() string {
			if len(ids) == 0 {
				return "none"
			}
			return ids[rng.IntN(len(ids))]
		}
		for step := range 400 {
			now = now.Add(time.Duration(rng.IntN(3)) * time.Second)
			st := allStatuses[rng.IntN(len(allStatuses))]
			owner := owners[rng.IntN(len(owners))]
			var op string
			switch rng.IntN(11) {
			case 0, 1:
				op = "Insert"
				id := fmt.Sprintf("t%d", step)
				status := StatusPending
				if rng.IntN(2) == 0 {
					status = StatusRunning
				}
				ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: id, ModuleID: "m", Status: status, SubmittedAt: now},
					Owner: owner, Resumable: rng.IntN(2) == 0}, 1000)
				require.NoError(t, err)
				require.True(t, ok)
				ids = append(ids, id)
			case 2, 3:
				op = "Update"
				id := pick()
				info, err := s.Get(ctx, id)
				if err != nil {
					continue
				}
				holder := owners[rng.IntN(len(owners))]
				info.Status = st
				if st.IsTerminal() {
					info.CompletedAt = now
				}
				_, err = s.Update(ctx, StoredTask{Info: info, Owner: owner, Resumable: true}, holder)
				require.NoError(t, err)
			case 4:
				op = "Claim"
				_, err := s.Claim(ctx, ClaimRequest{Owner: owner + "x", Limit: 1 + rng.IntN(3), Now: now})
				require.NoError(t, err)
			case 5:
				op = "Renew"
				_, err := s.Renew(ctx, LeaseRequest{Owner: owners[1+rng.IntN(3)], Expires: now.Add(time.Duration(rng.IntN(5)) * time.Second), Create: true})
				require.NoError(t, err)
				_, err = s.Renew(ctx, LeaseRequest{Owner: owners[1+rng.IntN(3)] + "x", Expires: now.Add(time.Hour), Create: true})
				require.NoError(t, err)
			case 6:
				op = "Recover"
				_, err := s.Recover(ctx, now)
				require.NoError(t, err)
			case 7:
				op = "Save"
				id := pick()
				info, err := s.Get(ctx, id)
				if err != nil {
					continue
				}
				info.Status = st // a terminal record may come back active
				require.NoError(t, s.Save(ctx, info))
			case 8:
				op = "SaveIf"
				id := pick()
				info, err := s.Get(ctx, id)
				if err != nil {
					continue
				}
				from := info.Status
				info.Status = st
				_, err = s.SaveIf(ctx, info, from)
				require.NoError(t, err)
			case 9:
				op = "Remove"
				_, err := s.Remove(ctx, pick())
				require.NoError(t, err)
			case 10:
				op = "Sweep"
				_, err := s.Sweep(ctx, SweepRequest{Before: now, Limit: 1 + rng.IntN(5)})
				require.NoError(t, err)
			}
			require.Equal(t, heldByWalk(s), s.held.counts(), "seed %d, step %d (%s)", seed, step, op)
		}
	}
}

// While every owner holding records has a live lease, recovery finds
// nothing to read, however many scheduled records wait; once one's lease
// lapses, it recovers that owner's records and is back to reading nothing.
func TestMemoryRecoverReadsOnlyForDeadOwners(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	for _, owner := range []string{"live", "dying"} {
		_, err := s.Renew(ctx, LeaseRequest{Owner: owner, Expires: now.Add(time.Minute), Create: true})
		require.NoError(t, err)
	}
	_, err := s.Renew(ctx, LeaseRequest{Owner: "dying", Expires: now.Add(time.Second)})
	require.NoError(t, err)
	for i := range 10_000 { // scheduled: held by no one, due in an hour
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("w%d", i), ModuleID: "m", Status: StatusPending, SubmittedAt: now},
			Resumable: true, NotBefore: now.Add(time.Hour)}, 1<<20)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for i, owner := range []string{"live", "dying", "dying"} {
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("r%d", i), ModuleID: "m", Status: StatusRunning, SubmittedAt: now},
			Owner: owner, Resumable: true}, 1<<20)
		require.NoError(t, err)
		require.True(t, ok)
	}
	leaseOf := func(at time.Time) func(string) bool {
		return func(owner string) bool {
			end, ok := s.leases[owner]
			return ok && !end.Before(at)
		}
	}
	assert.Equal(t, map[string]int64{"live": 1, "dying": 2}, s.held.counts())
	assert.False(t, s.held.anyDead(leaseOf(now)), "every holder is live: recovery reads nothing")
	n, err := s.Recover(ctx, now)
	require.NoError(t, err)
	assert.Zero(t, n)

	later := now.Add(2 * time.Second) // dying's lease has lapsed
	assert.True(t, s.held.anyDead(leaseOf(later)))
	orphans, err := s.Orphans(ctx, OrphanQuery{Self: "live", Now: later})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"r1", "r2"}, idsOf(orphans), "a dead owner's records, not the scheduled ones")
	n, err = s.Recover(ctx, later)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Equal(t, map[string]int64{"live": 1}, s.held.counts())
	assert.False(t, s.held.anyDead(leaseOf(later)), "after recovery, nothing to read again")
	orphans, err = s.Orphans(ctx, OrphanQuery{Self: "live", Now: later})
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"r1", "r2"}, idsOf(orphans), "no other manager lives: the handed-back records are orphans, the scheduled ones wait")
	_, err = s.Renew(ctx, LeaseRequest{Owner: "other", Expires: later.Add(time.Minute), Create: true})
	require.NoError(t, err)
	orphans, err = s.Orphans(ctx, OrphanQuery{Self: "live", Now: later})
	require.NoError(t, err)
	assert.Empty(t, orphans, "another manager lives: the records no one holds wait for it")
}

// BenchmarkMemoryRecoverIdle is one recovery pass of a store whose live
// managers hold a few running tasks while many scheduled tasks wait: its
// time must not follow the waiting ones.
func BenchmarkMemoryRecoverIdle(b *testing.B) {
	for _, waiting := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			ctx := context.Background()
			s := newMemoryStore(waiting)
			now := time.Now()
			_, err := s.Renew(ctx, LeaseRequest{Owner: "live", Expires: now.Add(time.Hour), Create: true})
			require.NoError(b, err)
			for i := range waiting {
				_, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("w%d", i), ModuleID: "m", Status: StatusPending, SubmittedAt: now},
					Resumable: true, NotBefore: now.Add(time.Hour)}, 1<<30)
				require.NoError(b, err)
			}
			for i := range 16 {
				_, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("r%d", i), ModuleID: "m", Status: StatusRunning, SubmittedAt: now},
					Owner: "live", Resumable: true}, 1<<30)
				require.NoError(b, err)
			}
			for b.Loop() {
				if _, err := s.Recover(ctx, now); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

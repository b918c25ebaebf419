package apcore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// laterLen is the number of entries in s's heap of records not yet due.
func laterLen(s *MemoryStore) int {
	s.order.Lock()
	defer s.order.Unlock()
	return len(s.claims.later)
}

// Records deleted long before they are due leave the claim heap at the
// next Claim once about half of it is stale, instead of staying in memory
// until their time; those left still run when due, once each.
func TestMemoryLaterHeapDropsDeletedRecords(t *testing.T) {
	ctx := context.Background()
	s := NewMemoryStore()
	now := time.Now()
	at := now.Add(time.Hour)
	_, err := s.Renew(ctx, LeaseRequest{Owner: "m1", Expires: at.Add(time.Hour), Create: true})
	require.NoError(t, err)
	const n = 4 * compactAtLeast
	for i := range n {
		ok, err := s.Insert(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("t%d", i), ModuleID: "m", Status: StatusPending, SubmittedAt: now},
			Resumable: true, NotBefore: at}, 1<<30)
		require.NoError(t, err)
		require.True(t, ok)
	}
	require.Equal(t, n, laterLen(s))

	// A quarter deleted: not yet worth a pass.
	for i := range n / 4 {
		require.NoError(t, s.Delete(ctx, fmt.Sprintf("t%d", i)))
	}
	got, err := s.Claim(ctx, ClaimRequest{Owner: "m1", Limit: 10, Now: now})
	require.NoError(t, err)
	require.Empty(t, got, "nothing is due")
	assert.Equal(t, n, laterLen(s))

	// Half deleted and a quarter ended by a write: the next Claim drops them.
	for i := n / 4; i < n/2; i++ {
		require.NoError(t, s.Delete(ctx, fmt.Sprintf("t%d", i)))
	}
	for i := n / 2; i < 3*n/4; i++ {
		ok, err := s.Update(ctx, StoredTask{Info: TaskInfo{TaskID: fmt.Sprintf("t%d", i), ModuleID: "m", Status: StatusCancelled, SubmittedAt: now, CompletedAt: now}}, "")
		require.NoError(t, err)
		require.True(t, ok)
	}
	_, err = s.Claim(ctx, ClaimRequest{Owner: "m1", Limit: 10, Now: now})
	require.NoError(t, err)
	assert.Equal(t, n/4, laterLen(s), "only the records still waiting are left")

	claimed, err := s.Claim(ctx, ClaimRequest{Owner: "m1", Limit: n, Now: at.Add(time.Minute)})
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, c := range claimed {
		assert.False(t, seen[c.Info.TaskID], "claimed twice: %s", c.Info.TaskID)
		seen[c.Info.TaskID] = true
	}
	assert.Len(t, claimed, n/4, "the records left run when due")
}

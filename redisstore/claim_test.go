package redisstore_test

import (
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClaimableTasksWaitWhereTheyShould checks where a claimable task waits
// (see scripts.go): in "ready" when it is due by its writer's clock or has
// no not_before, in "later" otherwise; that a Claim whose clock is behind
// the writer's puts a task it finds not due back in "later" instead of
// taking it, and takes it once due; and that a task an earlier version of
// the store left in "later" scored -inf is still claimed.
func TestClaimableTasksWaitWhereTheyShould(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	ready, later := prefix+"_idx:ready", prefix+"_idx:later"
	now := time.Now()
	_, err = s.Renew(ctx(t), apcore.LeaseRequest{Owner: "m", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	insert := func(id string, notBefore time.Time) {
		t.Helper()
		info := apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now}
		ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: info, Resumable: true, Inputs: []byte(`{}`), NotBefore: notBefore}, 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	in := func(key, id string) bool {
		t.Helper()
		err := c.ZScore(ctx(t), key, id).Err()
		if err == redis.Nil {
			return false
		}
		require.NoError(t, err)
		return true
	}
	ids := func(got []apcore.StoredTask) []string {
		out := []string{}
		for _, st := range got {
			out = append(out, st.Info.TaskID)
		}
		return out
	}

	insert("due", now.Add(-time.Second))
	insert("future", now.Add(time.Hour))
	insert("unset", time.Time{})
	insert("old-format", time.Time{})
	assert.True(t, in(ready, "due") && !in(later, "due"), "a task due by its writer's clock waits in ready")
	assert.True(t, in(later, "future") && !in(ready, "future"), "a task not yet due waits in later")
	assert.True(t, in(ready, "unset") && !in(later, "unset"), "a task without not_before waits in ready")
	// How an earlier version left a task without not_before.
	require.NoError(t, c.ZRem(ctx(t), ready, "old-format").Err())
	require.NoError(t, c.ZAdd(ctx(t), later, redis.Z{Score: -1e308, Member: "old-format"}).Err())

	behind, err := s.Claim(ctx(t), apcore.ClaimRequest{Owner: "m", Limit: 10, Now: now.Add(-10 * time.Second)}) // a claimer whose clock is 10 s behind
	require.NoError(t, err)
	assert.Equal(t, []string{"unset", "old-format"}, ids(behind), "in insertion order, without the tasks not due by the claimer's clock")
	assert.True(t, in(later, "due") && !in(ready, "due"), "a task not due by the claimer's clock goes back to later")

	again, err := s.Claim(ctx(t), apcore.ClaimRequest{Owner: "m", Limit: 10, Now: now})
	require.NoError(t, err)
	assert.Equal(t, []string{"due"}, ids(again))
	n, err := c.ZCard(ctx(t), ready).Result()
	require.NoError(t, err)
	assert.Zero(t, n, "ready is empty")
	assert.True(t, in(later, "future") && !in(ready, "future"))

	// A claimed task that ends leaves the held index and its spec, and
	// enters its state's index.
	spec, heldKey, completed := prefix+"_idx:spec", prefix+"_idx:held", prefix+"_idx:status:completed"
	require.True(t, c.HExists(ctx(t), spec, "due").Val(), "a running resumable task keeps its spec")
	require.True(t, in(heldKey, "m\x00due"))
	end := again[0]
	end.Info.Status, end.Info.CompletedAt = apcore.StatusCompleted, now.Add(time.Second)
	ok, err := s.Update(ctx(t), end, "m")
	require.NoError(t, err)
	require.True(t, ok)
	assert.False(t, c.HExists(ctx(t), spec, "due").Val(), "an ended task's spec is gone")
	assert.False(t, in(heldKey, "m\x00due"), "an ended task is held by no one")
	assert.True(t, in(completed, "due"))
	meta, err := c.HGet(ctx(t), prefix+"_idx:meta", "due").Result()
	require.NoError(t, err)
	assert.Regexp(t, `^completed\|\d+\|r\|\d+\|m$`, meta)
}

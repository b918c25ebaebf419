package redisstore_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pendingTask is a new pending record, resumable when owner is "".
func pendingTask(id, key string, priority int, owner string) apcore.StoredTask {
	return apcore.StoredTask{
		Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: time.Now(),
			UniqueKey: key, Priority: priority},
		Owner: owner, Resumable: owner == "", Inputs: []byte(`{}`),
	}
}

// requireDuplicate checks that err is Insert's duplicate error naming
// holder and key.
func requireDuplicate(t *testing.T, err error, holder, key string) {
	t.Helper()
	require.ErrorIs(t, err, apcore.ErrDuplicateTask)
	var dup *apcore.DuplicateError
	require.ErrorAs(t, err, &dup)
	assert.Equal(t, holder, dup.TaskID)
	assert.Equal(t, key, dup.Key)
}

// A unique key is held by a pending, running or completed record, whatever
// the limit, and not by a failed, cancelled or deleted one (Remove, Sweep);
// a duplicate Insert saves nothing. Keys of any bytes are kept apart.
func TestUniqueKeyIsHeldWhileActiveOrCompleted(t *testing.T) {
	s, c := store(t)
	prefix := strings.TrimSuffix(s.Key("x"), "x")
	now := time.Now()
	_, err := s.Renew(ctx(t), apcore.LeaseRequest{Owner: "m", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	insert := func(id, key string) (bool, error) {
		t.Helper()
		return s.Insert(ctx(t), pendingTask(id, key, 0, "m"), 100)
	}
	end := func(id string, st apcore.TaskStatus) {
		t.Helper()
		info, err := s.Get(ctx(t), id)
		require.NoError(t, err)
		info.Status, info.CompletedAt = st, time.Now()
		ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, "m")
		require.NoError(t, err)
		require.True(t, ok)
	}
	const key = "order:42 {tag} ü \x00 \"q\""
	ok, err := insert("a", key)
	require.NoError(t, err)
	require.True(t, ok)

	ok, err = insert("b", key)
	assert.False(t, ok)
	requireDuplicate(t, err, "a", key)
	_, err = s.Get(ctx(t), "b")
	require.ErrorIs(t, err, apcore.ErrTaskNotFound, "a duplicate saves nothing")
	n, err := s.Count(ctx(t))
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	ok, err = s.Insert(ctx(t), pendingTask("b", key, 0, "m"), 1)
	assert.False(t, ok)
	requireDuplicate(t, err, "a", key) // a duplicate at the limit is a duplicate

	ok, err = insert("other", key+"2") // another key
	require.NoError(t, err)
	require.True(t, ok)

	info, err := s.Get(ctx(t), "a")
	require.NoError(t, err)
	info.Status = apcore.StatusRunning
	ok, err = s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, "m")
	require.NoError(t, err)
	require.True(t, ok)
	_, err = insert("b", key)
	requireDuplicate(t, err, "a", key) // running

	end("a", apcore.StatusCompleted)
	_, err = insert("b", key)
	requireDuplicate(t, err, "a", key) // completed

	// A failed record frees its key, so does a cancelled one.
	require.NoError(t, s.Save(ctx(t), apcore.TaskInfo{TaskID: "a", ModuleID: "a.b", Status: apcore.StatusFailed,
		SubmittedAt: now, CompletedAt: now, UniqueKey: key}))
	ok, err = insert("c", key)
	require.NoError(t, err)
	require.True(t, ok)
	_, err = insert("b", key)
	requireDuplicate(t, err, "c", key)
	end("c", apcore.StatusCancelled)
	ok, err = insert("d", key)
	require.NoError(t, err)
	require.True(t, ok)

	// A deleted record frees its key, and leaves nothing of it behind.
	require.NoError(t, s.Delete(ctx(t), "d"))
	assert.False(t, c.HExists(ctx(t), prefix+"_idx:ukey", "d").Val())
	assert.False(t, c.HExists(ctx(t), prefix+"_idx:uniq", key).Val())
	// Deleting a record that no longer holds its key leaves the holder's.
	ok, err = insert("e", key)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, s.Delete(ctx(t), "c"))
	_, err = insert("b", key)
	requireDuplicate(t, err, "e", key)

	// So does a swept one.
	end("e", apcore.StatusCompleted)
	swept, err := s.Sweep(ctx(t), apcore.SweepRequest{Before: time.Now().Add(time.Minute), Limit: 100})
	require.NoError(t, err)
	assert.Equal(t, 2, swept) // "a" and "e"
	assert.Equal(t, []string{key + "2"}, c.HKeys(ctx(t), prefix+"_idx:uniq").Val(), "only other's key is left")
	assert.Equal(t, []string{"other"}, c.HKeys(ctx(t), prefix+"_idx:ukey").Val())
	ok, err = insert("f", key)
	require.NoError(t, err)
	require.True(t, ok)
}

// Inserts with one key racing from many goroutines over two Store values
// (two connections, as two processes would have) make one record; every
// other Insert names it.
func TestUniqueKeyRace(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	var stores []*redisstore.Store
	for range 2 {
		s, err := redisstore.New(newClient(t), redisstore.WithPrefix(prefix))
		require.NoError(t, err)
		stores = append(stores, s)
	}
	const rounds, racers = 20, 16
	for r := range rounds {
		key := fmt.Sprint("race-", r)
		var wg sync.WaitGroup
		won := make(chan string, racers)
		dups := make(chan string, racers)
		start := make(chan struct{})
		for i := range racers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				id := fmt.Sprintf("r%d-%d", r, i)
				ok, err := stores[i%2].Insert(ctx(t), pendingTask(id, key, 0, ""), 1_000_000)
				var dup *apcore.DuplicateError
				switch {
				case ok && err == nil:
					won <- id
				case !ok && errors.As(err, &dup) && dup.Key == key:
					dups <- dup.TaskID
				default:
					t.Errorf("Insert %s: %v, %v", id, ok, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		close(won)
		close(dups)
		require.Len(t, won, 1, "round %d", r)
		winner := <-won
		require.Len(t, dups, racers-1)
		for holder := range dups {
			assert.Equal(t, winner, holder)
		}
	}
	n, err := stores[0].Count(ctx(t))
	require.NoError(t, err)
	assert.Equal(t, rounds, n, "one record per key")
}

// claimIDs claims up to n tasks for owner at now and returns their ids.
func claimIDs(t *testing.T, s *redisstore.Store, owner string, n int, now time.Time, modules ...string) []string {
	t.Helper()
	req := apcore.ClaimRequest{Owner: owner, Limit: n, Now: now}
	if len(modules) > 0 {
		req.Modules = modules
	}
	got, err := s.Claim(ctx(t), req)
	require.NoError(t, err)
	ids := []string{}
	for _, st := range got {
		ids = append(ids, st.Info.TaskID)
	}
	return ids
}

// Claim takes higher priorities first, and within a priority the oldest
// first, whether a task waited in "ready" from its Insert, fell due in
// "later", was handed back by an Update, or was recovered from a dead
// owner; and so does a Claim limited to some modules.
func TestClaimTakesHigherPrioritiesFirst(t *testing.T) {
	s, c := store(t)
	prefix := strings.TrimSuffix(s.Key("x"), "x")
	now := time.Now()
	for _, o := range []string{"m", "dead"} {
		_, err := s.Renew(ctx(t), apcore.LeaseRequest{Owner: o, Expires: now.Add(time.Hour), Create: true})
		require.NoError(t, err)
	}
	insert := func(id string, priority int, notBefore time.Time) {
		t.Helper()
		st := pendingTask(id, "", priority, "")
		st.NotBefore = notBefore
		ok, err := s.Insert(ctx(t), st, 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	insert("p0-a", 0, time.Time{})
	insert("p5-a", 5, time.Time{})
	insert("pm5", -5, time.Time{})
	insert("p5-later", 5, now.Add(time.Minute)) // scheduled
	insert("p100", 100, now.Add(2*time.Minute)) // scheduled
	insert("p5-b", 5, time.Time{})
	insert("p0-b", 0, now.Add(-time.Second))
	insert("min", apcore.MinPriority, time.Time{})

	assert.Equal(t, []string{"p5-a", "p5-b"}, claimIDs(t, s, "m", 2, now))
	assert.Equal(t, []string{"p0-a", "p0-b", "pm5", "min"}, claimIDs(t, s, "m", 10, now))
	assert.EqualValues(t, 2, c.ZCard(ctx(t), prefix+"_idx:later").Val(), "the scheduled tasks wait in later")
	assert.Empty(t, claimIDs(t, s, "m", 10, now))

	insert("p0-c", 0, time.Time{})
	assert.Equal(t, []string{"p100", "p5-later", "p0-c"}, claimIDs(t, s, "m", 10, now.Add(3*time.Minute)), "fell due, ranked by priority")

	// Handed back (a retry with a backoff already over), and recovered.
	handBack := func(id string) {
		t.Helper()
		info, err := s.Get(ctx(t), id)
		require.NoError(t, err)
		info.Status = apcore.StatusPending
		ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Resumable: true, NotBefore: now.Add(-time.Second)}, "m")
		require.NoError(t, err)
		require.True(t, ok)
	}
	handBack("pm5")
	handBack("p5-a")
	handBack("p0-a")
	insert("dead-p7", 7, time.Time{})
	require.Equal(t, []string{"dead-p7"}, claimIDs(t, s, "dead", 1, now))
	require.NoError(t, s.Release(ctx(t), "dead"))
	n, err := s.Recover(ctx(t), now)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	insert("p1", 1, time.Time{})
	assert.Equal(t, []string{"dead-p7", "p5-a", "p1", "p0-a", "pm5"}, claimIDs(t, s, "m", 10, now))

	// A Claim limited to some modules walks "ready" in the same order.
	for i, p := range []int{-1, 3, 3, 0, 9} {
		st := pendingTask(fmt.Sprint("mod-", i), "", p, "")
		if i == 4 {
			st.Info.ModuleID = "other"
		}
		ok, err := s.Insert(ctx(t), st, 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	assert.Equal(t, []string{"mod-1", "mod-2", "mod-3", "mod-0"}, claimIDs(t, s, "m", 10, now, "a.b"))
	assert.Equal(t, []string{"mod-4"}, claimIDs(t, s, "m", 10, now))

	// An ended task leaves no priority behind.
	for _, id := range []string{"p5-a", "dead-p7"} {
		info, err := s.Get(ctx(t), id)
		require.NoError(t, err)
		info.Status, info.CompletedAt = apcore.StatusCompleted, now
		ok, err := s.Update(ctx(t), apcore.StoredTask{Info: info, Owner: "m"}, "m")
		require.NoError(t, err)
		require.True(t, ok)
		assert.False(t, c.HExists(ctx(t), prefix+"_idx:prio", id).Val(), id)
	}
}

// New records the layout version in a store that has none, and refuses a
// store of a newer layout (or a key that holds no version) with an error
// naming both versions, changing nothing.
func TestLayoutVersion(t *testing.T) {
	c := client(t)
	prefix := freshPrefix(t, c)
	key := prefix + "_idx:layout"
	_, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	assert.Equal(t, fmt.Sprint(redisstore.DefaultLayout), c.Get(ctx(t), key).Val())
	_, err = redisstore.New(c, redisstore.WithPrefix(prefix)) // again
	require.NoError(t, err)

	keys := func() []string {
		ks, err := c.Keys(ctx(t), strings.TrimSuffix(prefix, ":")+"*").Result()
		require.NoError(t, err)
		return ks
	}
	newer := fmt.Sprint(redisstore.LayoutVersion + 1)
	for _, found := range []string{newer, "x", "0"} {
		require.NoError(t, c.Set(ctx(t), key, found, 0).Err())
		_, err = redisstore.New(c, redisstore.WithPrefix(prefix))
		require.ErrorIs(t, err, apcore.ErrStoreUnavailable)
		var le *redisstore.LayoutError
		require.ErrorAs(t, err, &le)
		assert.Equal(t, found, le.Found)
		assert.Equal(t, redisstore.LayoutVersion, le.Known)
		assert.Contains(t, err.Error(), key)
		if found == newer {
			assert.Contains(t, err.Error(), fmt.Sprintf("layout version is %s", newer))
			assert.Contains(t, err.Error(), fmt.Sprintf("newer than version %d", redisstore.LayoutVersion))
		}
		assert.Equal(t, found, c.Get(ctx(t), key).Val(), "New changed the version")
		assert.Equal(t, []string{key}, keys(), "New wrote beside the version")
	}

	// With a hash tag the version is in the store's slot.
	require.NoError(t, c.Del(ctx(t), key).Err())
	_, err = redisstore.New(c, redisstore.WithPrefix(prefix), redisstore.WithHashTag(true))
	require.NoError(t, err)
	tagged := "{" + strings.TrimSuffix(prefix, ":") + "}:_idx:layout"
	assert.Equal(t, fmt.Sprint(redisstore.DefaultLayout), c.Get(ctx(t), tagged).Val())
}

package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClaimByModuleLooksAtFewWaitingTasks checks that a Claim limited to
// some modules looks at no more than s.look waiting tasks: with five tasks
// of another module ahead and a bound of three it takes nothing, and
// leaves every task in "ready"; with a bound past them it takes its
// module's task. A task it finds not due by its clock goes to "later".
func TestClaimByModuleLooksAtFewWaitingTasks(t *testing.T) {
	s, c := internalStore(t, "look")
	ctx := context.Background()
	now := time.Now()
	_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: "m", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	insert := func(id, module string, notBefore time.Time) {
		t.Helper()
		info := apcore.TaskInfo{TaskID: id, ModuleID: module, Status: apcore.StatusPending, SubmittedAt: now}
		ok, err := s.Insert(ctx, apcore.StoredTask{Info: info, Resumable: true, Inputs: []byte(`{}`), NotBefore: notBefore}, 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	for i := range 5 {
		insert(fmt.Sprintf("x-%d", i), "mod.x", time.Time{})
	}
	insert("y-ahead", "mod.y", now.Add(-time.Second)) // due by its writer's clock only
	insert("y", "mod.y", time.Time{})
	ready, later := s.base+indexTag+"ready", s.base+indexTag+"later"
	claim := func(at time.Time) []string {
		t.Helper()
		got, err := s.Claim(ctx, apcore.ClaimRequest{Owner: "m", Limit: 10, Now: at, Modules: []string{"mod.y"}})
		require.NoError(t, err)
		ids := []string{}
		for _, st := range got {
			ids = append(ids, st.Info.TaskID)
		}
		return ids
	}

	s.look = 3
	assert.Empty(t, claim(now), "a Claim that may look at 3 waiting tasks reached past them")
	assert.EqualValues(t, 7, c.ZCard(ctx, ready).Val(), "the tasks looked at and skipped stay in ready")

	s.look = 0 // claimLook
	assert.Equal(t, []string{"y"}, claim(now.Add(-10*time.Second)), "a claimer whose clock is 10 s behind")
	assert.EqualValues(t, 5, c.ZCard(ctx, ready).Val(), "the other module's tasks stay in ready")
	assert.NoError(t, c.ZScore(ctx, later, "y-ahead").Err(), "a task not due by the claimer's clock goes to later")
	assert.Equal(t, []string{"y-ahead"}, claim(now))
	assert.EqualValues(t, 5, c.ZCard(ctx, ready).Val())
}

// TestClaimMovesFewDueTasks checks that a Claim moves at most s.steps.move
// due tasks from "later" to "ready", the first due first, ranked by
// priority there, and that tasks not yet due stay where they are.
func TestClaimMovesFewDueTasks(t *testing.T) {
	s, c := internalStore(t, "move")
	ctx := context.Background()
	now := time.Now()
	_, err := s.Renew(ctx, apcore.LeaseRequest{Owner: "m", Expires: now.Add(time.Hour), Create: true})
	require.NoError(t, err)
	for i := range 10 {
		info := apcore.TaskInfo{TaskID: fmt.Sprint("t", i), ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: now, Priority: i}
		ok, err := s.Insert(ctx, apcore.StoredTask{Info: info, Resumable: true, Inputs: []byte(`{}`),
			NotBefore: now.Add(time.Duration(i+1) * time.Minute)}, 100)
		require.NoError(t, err)
		require.True(t, ok)
	}
	ready, later := s.base+indexTag+"ready", s.base+indexTag+"later"
	claim := func(at time.Time) []string {
		t.Helper()
		got, err := s.Claim(ctx, apcore.ClaimRequest{Owner: "m", Limit: 1, Now: at})
		require.NoError(t, err)
		ids := []string{}
		for _, st := range got {
			ids = append(ids, st.Info.TaskID)
		}
		return ids
	}
	assert.Empty(t, claim(now))
	assert.EqualValues(t, 10, c.ZCard(ctx, later).Val(), "none is due")
	s.steps.move = 3
	due := now.Add(time.Hour)
	assert.Equal(t, []string{"t2"}, claim(due), "the three due first moved, the highest of them taken")
	assert.EqualValues(t, 7, c.ZCard(ctx, later).Val())
	assert.EqualValues(t, 2, c.ZCard(ctx, ready).Val())
	assert.Equal(t, []string{"t5"}, claim(due))
	s.steps.move = 0 // claimMove
	assert.Equal(t, []string{"t9"}, claim(due))
	assert.Zero(t, c.ZCard(ctx, later).Val())
}

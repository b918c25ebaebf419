package redisstore_test

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A result that JSON cannot encode, or that is larger than the store
// writes, never leaves a record running: each task ends failed with
// GENERAL_INVALID_INPUT for every reader, and its max_tasks place is freed.
func TestResultsThatCannotBeKept(t *testing.T) {
	s, _ := store(t, redisstore.WithMaxRecordBytes(64<<10))
	results := map[string]any{
		"nan":        math.NaN(),
		"inf":        math.Inf(1),
		"chan":       make(chan int),
		"func":       func() {},
		"complex":    complex(1, 2),
		"nan-in-map": map[string]any{"ok": 1.0, "bad": math.NaN()},
		"too-large":  strings.Repeat("x", 100<<10),
	}
	var mu sync.Mutex
	seen := map[string]apcore.TaskInfo{} // the last record the observer saw, by task
	modules := map[string]func(context.Context, map[string]any) (any, error){}
	for name, res := range results {
		modules["bad."+strings.ReplaceAll(name, "-", "_")] = func(context.Context, map[string]any) (any, error) { return res, nil }
	}
	m := manager(t, registry(t, modules), s, apcore.WithMaxTasks(1), apcore.WithObserver(func(info apcore.TaskInfo) {
		mu.Lock()
		seen[info.TaskID] = info
		mu.Unlock()
	}))
	for name := range results {
		t.Run(name, func(t *testing.T) {
			id, err := m.Submit(ctx(t), "bad."+strings.ReplaceAll(name, "-", "_"), nil)
			require.NoError(t, err, "Submit refused: the previous task's max_tasks place was not freed")
			info, err := m.Wait(ctx(t), id)
			require.NoError(t, err)
			failedInvalid := func(who string, got apcore.TaskInfo) {
				assert.Equal(t, apcore.StatusFailed, got.Status, who)
				assert.Equal(t, apcore.CodeInvalidInput, got.ErrorCode, who)
				assert.Nil(t, got.Result, who)
				assert.NotEmpty(t, got.Error, who)
			}
			failedInvalid("Wait", info)
			status, err := m.Status(ctx(t), id)
			require.NoError(t, err)
			failedInvalid("Status", status)
			stored, err := s.Get(ctx(t), id)
			require.NoError(t, err)
			failedInvalid("the store", stored)
			_, err = m.Result(ctx(t), id)
			assert.ErrorIs(t, err, apcore.ErrTaskNotCompleted)
			listed, err := m.List(ctx(t), apcore.StatusFailed)
			require.NoError(t, err)
			found := false
			for _, l := range listed {
				if l.TaskID == id {
					found = true
					failedInvalid("List", l)
				}
			}
			assert.True(t, found, "List(failed) lacks the task")
			mu.Lock()
			failedInvalid("the observer", seen[id])
			mu.Unlock()
			n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			assert.Zero(t, n, "the task still counts as active")
		})
	}
}

// A terminal Update or SaveIf whose record cannot be written writes a
// failed record in its place and reports false, so the writer reads back
// what the store holds; Save, which has no such reader, refuses it.
func TestUnwritableTerminalRecordIsWrittenFailed(t *testing.T) {
	s, _ := store(t)
	base := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for i, via := range []string{"Update", "SaveIf"} {
		id := fmt.Sprint("unwritable-", i)
		ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusPending, SubmittedAt: base}, Owner: "m1"}, 10)
		require.NoError(t, err)
		require.True(t, ok)
		done := apcore.TaskInfo{TaskID: id, ModuleID: "a.b", Status: apcore.StatusCompleted, SubmittedAt: base, StartedAt: base, CompletedAt: base.Add(time.Second),
			Result: map[string]any{"x": math.Inf(-1)}}
		if via == "Update" {
			ok, err = s.Update(ctx(t), apcore.StoredTask{Info: done, Owner: "m1"}, "m1")
		} else {
			ok, err = s.SaveIf(ctx(t), done, apcore.StatusPending, apcore.StatusRunning)
		}
		require.NoError(t, err, via)
		assert.False(t, ok, via)
		got, err := s.Get(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusFailed, got.Status, via)
		assert.Equal(t, apcore.CodeInvalidInput, got.ErrorCode, via)
		assert.Equal(t, base.Add(time.Second), got.CompletedAt, via)
	}
	// A failed record too large to write (a huge error message).
	small, _ := store(t, redisstore.WithMaxRecordBytes(4096))
	ok, err := small.Insert(ctx(t), apcore.StoredTask{Info: apcore.TaskInfo{TaskID: "huge-error", ModuleID: "a.b", Status: apcore.StatusRunning, SubmittedAt: base, StartedAt: base}, Owner: "m1"}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	huge := apcore.TaskInfo{TaskID: "huge-error", ModuleID: "a.b", Status: apcore.StatusFailed, SubmittedAt: base, StartedAt: base, CompletedAt: base,
		Error: strings.Repeat("e", 10_000), ErrorCode: apcore.CodeModuleExecuteError}
	ok, err = small.Update(ctx(t), apcore.StoredTask{Info: huge, Owner: "m1"}, "m1")
	require.NoError(t, err)
	assert.False(t, ok)
	got, err := small.Get(ctx(t), "huge-error")
	require.NoError(t, err)
	assert.Equal(t, apcore.StatusFailed, got.Status)
	assert.Equal(t, apcore.CodeInvalidInput, got.ErrorCode)
	assert.Less(t, len(got.Error), 4096)

	err = s.Save(ctx(t), apcore.TaskInfo{TaskID: "unwritable-save", ModuleID: "a.b", Status: apcore.StatusCompleted, Result: math.NaN()})
	assert.ErrorIs(t, err, apcore.ErrInvalidInput)
	n, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
	require.NoError(t, err)
	assert.Zero(t, n)
}

// Recover writes an abandoned record anew from its fields (Redis' Lua has
// no exact JSON encoder for them): every field reads back as it was.
func TestRecoverKeepsEveryField(t *testing.T) {
	s, _ := store(t)
	sub := time.Date(2024, 3, 9, 12, 30, 45, 123456000, time.UTC)
	info := apcore.TaskInfo{TaskID: "keep-all", ModuleID: "mod.with/slash\"quote", Status: apcore.StatusRunning,
		SubmittedAt: sub, StartedAt: sub.Add(time.Microsecond), RetryCount: 2, MaxRetries: 3,
		Progress: 42.123456789, ProgressMessage: "a/b \"q\" ünïcode \\ \n tab\t",
		RunAt: new(sub.Add(1500 * time.Millisecond)), UniqueKey: "key/with \"quote\" ü {x}", Priority: -42}
	ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: info, Owner: "gone"}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	now := sub.Add(time.Hour + 654321*time.Microsecond)
	n, err := s.Recover(ctx(t), now)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	got, err := s.Get(ctx(t), "keep-all")
	require.NoError(t, err)
	want := info
	want.Status, want.CompletedAt, want.ErrorCode = apcore.StatusFailed, now, apcore.CodeTaskAbandoned
	want.Error = got.Error
	assert.NotEmpty(t, got.Error)
	assert.Equal(t, want, got)
}

// Claim changes a record's own status and started_at, never text that
// looks like them inside its ids.
func TestClaimChangesOnlyTheRecordsOwnFields(t *testing.T) {
	s, _ := store(t)
	sub := time.Date(2024, 3, 9, 12, 30, 45, 123456000, time.UTC)
	info := apcore.TaskInfo{TaskID: `id "status":"pending","started_at":null`, ModuleID: `m"status":"pending"`, Status: apcore.StatusPending, SubmittedAt: sub}
	ok, err := s.Insert(ctx(t), apcore.StoredTask{Info: info, Resumable: true, Inputs: []byte(`{"status":"pending"}`), NotBefore: sub}, 10)
	require.NoError(t, err)
	require.True(t, ok)
	now := sub.Add(time.Second)
	_, err = s.Renew(ctx(t), apcore.LeaseRequest{Owner: "m1", Expires: now.Add(time.Hour), Create: true}) // only an owner with a live lease claims
	require.NoError(t, err)
	claimed, err := s.Claim(ctx(t), apcore.ClaimRequest{Owner: "m1", Limit: 1, Now: now})
	require.NoError(t, err)
	require.Len(t, claimed, 1)
	want := info
	want.Status, want.StartedAt = apcore.StatusRunning, now
	assert.Equal(t, want, claimed[0].Info)
	got, err := s.Get(ctx(t), info.TaskID)
	require.NoError(t, err)
	assert.Equal(t, want, got)
	assert.JSONEq(t, `{"status":"pending"}`, string(claimed[0].Inputs))
}

package apcore

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	_ "time/tzdata" // the DST test's zone, whatever the machine has

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A bad schedule is GENERAL_INVALID_INPUT naming what is wrong.
func TestAddScheduleRefuses(t *testing.T) {
	m := newManager(t, registry(t, map[string]Module{"a.x": constModule(1)}))
	for _, c := range []struct {
		s    Schedule
		want string
	}{
		{Schedule{Name: "s.a", Spec: "", ModuleID: "a.x"}, "empty"},
		{Schedule{Name: "s.a", Spec: "* * * *", ModuleID: "a.x"}, "want 5 fields"},
		{Schedule{Name: "s.a", Spec: "61 * * * *", ModuleID: "a.x"}, "field 1 (minute)"},
		{Schedule{Name: "s.a", Spec: "* 24 * * *", ModuleID: "a.x"}, "field 2 (hour)"},
		{Schedule{Name: "s.a", Spec: "* * 0 * *", ModuleID: "a.x"}, "field 3 (day of month)"},
		{Schedule{Name: "s.a", Spec: "*/5 * * 13 *", ModuleID: "a.x"}, "field 4 (month)"},
		{Schedule{Name: "s.a", Spec: "* * * * mon-fri-x", ModuleID: "a.x"}, "field 5 (day of week)"},
		{Schedule{Name: "s.a", Spec: "@sometimes", ModuleID: "a.x"}, "@sometimes"},
		{Schedule{Name: "s.a", Spec: "@every -1s", ModuleID: "a.x"}, "@every"},
		{Schedule{Name: "s.a", Spec: "CRON_TZ=Mars/Olympus 0 * * * *", ModuleID: "a.x"}, "unknown time zone"},
		{Schedule{Name: "Bad Name", Spec: "@hourly", ModuleID: "a.x"}, "name"},
		{Schedule{Name: "s.a", Spec: "@hourly", ModuleID: "a.x", Options: []SubmitOption{WithPriority(1000)}}, "WithPriority"},
		{Schedule{Name: "s.a", Spec: "@hourly", ModuleID: "a.x", Options: []SubmitOption{WithDelay(time.Second)}}, "WithRunAt"},
		{Schedule{Name: "s.a", Spec: "@hourly", ModuleID: "a.x", Inputs: map[string]any{"c": make(chan int)}, Options: []SubmitOption{WithResumable()}}, "JSON"},
	} {
		err := m.AddSchedule(c.s)
		require.ErrorIs(t, err, ErrInvalidInput, c.s.Spec)
		assert.Contains(t, err.Error(), c.want)
	}
	require.NoError(t, m.AddSchedule(Schedule{Name: "s.a", Spec: "CRON_TZ=Europe/Berlin 0 3 * * *", ModuleID: "a.x"}))
	err := m.AddSchedule(Schedule{Name: "s.a", Spec: "@daily", ModuleID: "a.x"})
	require.ErrorIs(t, err, ErrInvalidInput)
	assert.Contains(t, err.Error(), "already")
	assert.True(t, m.RemoveSchedule("s.a"))
	assert.False(t, m.RemoveSchedule("s.a"))
	require.NoError(t, m.Shutdown(testCtx(t)))
	require.ErrorIs(t, m.AddSchedule(Schedule{Name: "s.b", Spec: "@daily", ModuleID: "a.x"}), ErrManagerClosed)
}

// "@every d" ticks at multiples of d since the epoch, so replicas started
// at different times tick together.
func TestEveryIsAligned(t *testing.T) {
	s, err := parseSchedule("@every 30s")
	require.NoError(t, err)
	for _, from := range []string{"2026-12-03T10:00:00Z", "2026-12-03T10:00:07.5Z", "2026-12-03T10:00:29.999Z"} {
		at, _ := time.Parse(time.RFC3339Nano, from)
		assert.Equal(t, "2026-12-03T10:00:30Z", s.Next(at).UTC().Format(time.RFC3339Nano), from)
	}
	// Durations that do not divide the seconds between year 1 and 1970.
	for _, d := range []time.Duration{7 * time.Second, 11 * time.Second, 168 * time.Hour} {
		s, err := parseSchedule("@every " + d.String())
		require.NoError(t, err)
		secs := int64(d / time.Second)
		for _, at := range []time.Time{time.Unix(1796311665, 123), time.Unix(1796311667, 0), time.Unix(-5, 0)} {
			next := s.Next(at)
			assert.Zero(t, next.Unix()%secs, "@every %v from %v: %v is not a multiple since the epoch", d, at, next)
			assert.True(t, next.After(at) && next.Sub(at) <= d, "@every %v from %v: %v", d, at, next)
		}
	}
}

// Across a daylight-saving change the cron library's rules apply: in
// Berlin, 02:30 does not exist on 2026-03-29 (clocks go 02:00 -> 03:00),
// so that day has no tick; on 2026-10-25 it exists twice, and ticks at
// each (two instants, two tasks).
func TestScheduleAcrossDST(t *testing.T) {
	s, err := parseSchedule("CRON_TZ=Europe/Berlin 30 2 * * *")
	require.NoError(t, err)
	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	next := s.Next(time.Date(2026, 3, 28, 12, 0, 0, 0, berlin))
	assert.Equal(t, "2026-03-30 02:30", next.In(berlin).Format("2006-01-02 15:04"), "the skipped 02:30 does not tick")
	first := s.Next(time.Date(2026, 10, 25, 0, 0, 0, 0, berlin))
	second := s.Next(first)
	third := s.Next(second)
	assert.Equal(t, "2026-10-25T00:30:00Z", first.UTC().Format(time.RFC3339), "02:30 CEST")
	assert.Equal(t, "2026-10-25T01:30:00Z", second.UTC().Format(time.RFC3339), "02:30 CET: the repeated 02:30 ticks again")
	assert.Equal(t, "2026-10-26 02:30", third.In(berlin).Format("2006-01-02 15:04"))
}

// Three managers sharing a store that all added one schedule make exactly
// one task per tick, each with the tick's unique key.
func TestScheduleOneTaskPerTickAcrossManagers(t *testing.T) {
	ctx := testCtx(t)
	store := NewMemoryStore()
	var runs atomic.Int32
	mod := ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) { runs.Add(1); return nil, nil })
	obs := newObserved()
	var mgrs []*TaskManager
	for i := range 3 {
		opts := []Option{WithStore(store)}
		if i == 0 {
			opts = append(opts, WithObserver(obs.observe))
		}
		m := newManager(t, registry(t, map[string]Module{"a.tick": mod}), opts...)
		mgrs = append(mgrs, m)
		require.NoError(t, m.AddSchedule(Schedule{Name: "s.tick", Spec: "@every 1s", ModuleID: "a.tick", Options: []SubmitOption{WithResumable()}}))
	}
	// Wait for three ticks' tasks to complete.
	deadline := time.Now().Add(8 * time.Second)
	var done []TaskInfo
	for time.Now().Before(deadline) {
		all, err := store.List(ctx, StatusCompleted)
		require.NoError(t, err)
		if done = all; len(done) >= 3 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	require.GreaterOrEqual(t, len(done), 3, "three ticks in 8 s")
	for _, m := range mgrs {
		require.NoError(t, m.Shutdown(ctx))
	}
	all, err := store.List(ctx, "")
	require.NoError(t, err)
	keys := map[string]int{}
	for _, info := range all {
		require.True(t, strings.HasPrefix(info.UniqueKey, "schedule:s.tick:"), info.UniqueKey)
		keys[info.UniqueKey]++
	}
	for key, n := range keys {
		assert.Equal(t, 1, n, "tick %s made %d tasks", key, n)
	}
	assert.Equal(t, len(all), int(runs.Load())+countStatus(all, StatusCancelled), "every task ran once or was cancelled at Shutdown")
}

func countStatus(all []TaskInfo, s TaskStatus) int {
	n := 0
	for _, info := range all {
		if info.Status == s {
			n++
		}
	}
	return n
}

// SkipWhileActive skips ticks while the previous tick's task runs.
func TestScheduleSkipWhileActive(t *testing.T) {
	ctx := testCtx(t)
	g := newGate(true)
	store := NewMemoryStore()
	logs := newLogCapture()
	m := newManager(t, registry(t, map[string]Module{"a.gate": g}), WithStore(store), WithLogger(logs.logger()))
	require.NoError(t, m.AddSchedule(Schedule{Name: "s.slow", Spec: "@every 1s", ModuleID: "a.gate", SkipWhileActive: true}))
	g.waitStart(t)
	// Two more ticks come while it runs: each is skipped.
	for range 2 {
		logs.waitMessage(t, slog.LevelDebug, "apcore: schedule tick skipped: the previous tick's task is active")
	}
	n, err := store.Count(ctx)
	require.NoError(t, err)
	assert.Equal(t, 1, n, "ticks were skipped while the first tick's task ran")
	assert.True(t, m.RemoveSchedule("s.slow"))
	g.open()
}

package apcore

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The protocol's cross-language conformance cases are read at run time from
// the project's copy in testdata/ (see testdata/README.md), or from
// $APCORE_FIXTURES when it is set. A missing folder fails the suite:
// conformance is not optional.

func fixturesDir() string {
	if d := os.Getenv("APCORE_FIXTURES"); d != "" {
		return d
	}
	return "testdata"
}

type fixtureFile struct {
	Description string            `json:"description"`
	TestCases   []json.RawMessage `json:"test_cases"`
}

// fixtureCase holds every field any case uses; each action reads its own.
type fixtureCase struct {
	ID          string         `json:"id"`
	Action      string         `json:"action"`
	Config      fixtureConfig  `json:"config"`
	TaskInfo    *TaskInfo      `json:"task_info"`
	StoredTasks []TaskInfo     `json:"stored_tasks"`
	StoredExp   []TaskInfo     `json:"stored_expired_tasks"`
	LookupID    string         `json:"lookup_id"`
	Filter      TaskStatus     `json:"status_filter"`
	Retry       *fixtureRetry  `json:"retry_config"`
	NowTS       float64        `json:"now_timestamp"`
	Expected    map[string]any `json:"expected"`

	// async_task_cancellation.json keeps its parameters at the top level.
	MaxTasks         int     `json:"max_tasks"`
	MaxConcurrent    int     `json:"max_concurrent"`
	SubmitCount      int     `json:"submit_count"`
	ExpectedError    string  `json:"expected_error"`
	MaxRetries       int     `json:"max_retries"`
	RetryDelayMS     float64 `json:"retry_delay_ms"`
	Backoff          float64 `json:"backoff_multiplier"`
	ExpectedFinal    string  `json:"expected_final_status"`
	NoAttemptsAfter  bool    `json:"expected_no_attempt_after_cancel"`
	SimulatedFailure string  `json:"simulated_failure"`
}

type fixtureConfig struct {
	Store *struct {
		Type string `json:"type"`
	} `json:"store"`
	Reaper *struct {
		Enabled         bool    `json:"enabled"`
		TTLSeconds      float64 `json:"ttl_seconds"`
		SweepIntervalMS float64 `json:"sweep_interval_ms"`
	} `json:"reaper"`
}

type fixtureRetry struct {
	MaxRetries      int     `json:"max_retries"`
	RetryDelayMS    float64 `json:"retry_delay_ms"`
	Backoff         float64 `json:"backoff_multiplier"`
	MaxRetryDelayMS float64 `json:"max_retry_delay_ms"`
}

func ms(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }

func (r fixtureRetry) config() RetryConfig {
	return RetryConfig{
		MaxRetries:        r.MaxRetries,
		RetryDelay:        ms(r.RetryDelayMS),
		BackoffMultiplier: r.Backoff,
		MaxRetryDelay:     ms(r.MaxRetryDelayMS),
	}
}

func fromUnix(f float64) time.Time {
	t, err := fromSeconds("now_timestamp", f)
	if err != nil {
		panic(err)
	}
	return t
}

// namedStore is a custom store with whatever type name a fixture asks for.
type namedStore struct {
	*MemoryStore
	name string
}

func (n namedStore) Name() string { return n.name }

func loadFixture(t *testing.T, name string) []fixtureCase {
	t.Helper()
	path := filepath.Join(fixturesDir(), name)
	data, err := os.ReadFile(path)
	require.NoError(t, err, "conformance fixtures are required; set APCORE_FIXTURES to their folder")
	var f fixtureFile
	require.NoError(t, json.Unmarshal(data, &f), path)
	require.NotEmpty(t, f.TestCases, path)
	var cases []fixtureCase
	for _, raw := range f.TestCases {
		var c fixtureCase
		require.NoError(t, json.Unmarshal(raw, &c), string(raw))
		require.NotEmpty(t, c.ID)
		cases = append(cases, c)
	}
	return cases
}

func TestConformanceEvolution(t *testing.T) {
	for _, c := range loadFixture(t, "async_task_evolution.json") {
		t.Run(c.ID, func(t *testing.T) { runFixture(t, c) })
	}
}

func TestConformanceCancellation(t *testing.T) {
	for _, c := range loadFixture(t, "async_task_cancellation.json") {
		t.Run(c.ID, func(t *testing.T) { runFixture(t, c) })
	}
}

// expectJSON compares a value with a fixture's expectation as JSON.
func expectJSON(t *testing.T, want, got any) {
	t.Helper()
	w, err := json.Marshal(want)
	require.NoError(t, err)
	g, err := json.Marshal(got)
	require.NoError(t, err)
	assert.JSONEq(t, string(w), string(g))
}

func expectedIDs(t *testing.T, v any) []string {
	t.Helper()
	list, ok := v.([]any)
	require.True(t, ok, "expected a list of ids, got %v", v)
	out := []string{}
	for _, x := range list {
		out = append(out, x.(string))
	}
	return out
}

func runFixture(t *testing.T, c fixtureCase) {
	ctx := testCtx(t)
	exp := c.Expected
	switch c.Action {
	case "construct_manager":
		var opts []Option
		if c.Config.Store != nil {
			opts = append(opts, WithStore(namedStore{NewMemoryStore(), c.Config.Store.Type}))
		}
		m := newManager(t, NewRegistry(), opts...)
		assert.Equal(t, exp["store_type"], m.Store().Name())

	case "save_then_get":
		s := NewMemoryStore()
		require.NotNil(t, c.TaskInfo)
		require.NoError(t, s.Save(ctx, *c.TaskInfo))
		got, err := s.Get(ctx, c.LookupID)
		if exp["found"] == false {
			require.ErrorIs(t, err, ErrTaskNotFound)
			return
		}
		require.NoError(t, err)
		assert.Equal(t, exp["task_id"], got.TaskID)
		assert.Equal(t, exp["status"], string(got.Status))
		expectJSON(t, exp["result"], got.Result)
		expectJSON(t, *c.TaskInfo, got) // every field survives

	case "list_by_status":
		s := NewMemoryStore()
		seed(t, s, c.StoredTasks...)
		got, err := s.List(ctx, c.Filter)
		require.NoError(t, err)
		assert.EqualValues(t, exp["count"], len(got))
		assert.Equal(t, expectedIDs(t, exp["task_ids"]), taskIDs(got))

	case "compute_retry_delays":
		cfg := c.Retry.config()
		require.NotEmpty(t, exp)
		for attempt := 0; ; attempt++ {
			want, ok := exp[fmt.Sprintf("attempt_%d_delay_ms", attempt)]
			if !ok {
				require.Equal(t, len(exp), attempt, "every expectation is an attempt_N_delay_ms")
				break
			}
			assert.Equal(t, ms(want.(float64)), cfg.ComputeDelay(attempt), "attempt %d", attempt)
		}

	case "execute_and_observe":
		// The module fails once; the task must go back to pending with
		// retry_count 1 and wait ComputeDelay(0) before its next attempt.
		var calls atomic.Int32
		obs := newObserved()
		m := newManager(t, registry(t, map[string]Module{c.TaskInfo.ModuleID: failModule(c.SimulatedFailure, &calls)}),
			WithObserver(obs.observe))
		cfg := c.Retry.config()
		id, err := m.Submit(ctx, c.TaskInfo.ModuleID, nil, WithRetry(cfg))
		require.NoError(t, err)
		after := obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.RetryCount > 0 })
		stored, err := m.Status(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, exp["status_after_first_failure"], string(stored.Status))
		assert.EqualValues(t, exp["retry_count_after_first_failure"], stored.RetryCount)
		assert.Equal(t, after.RetryCount, stored.RetryCount)
		assert.Equal(t, c.TaskInfo.MaxRetries, stored.MaxRetries)
		assert.Equal(t, ms(exp["next_retry_delay_ms"].(float64)), cfg.ComputeDelay(stored.RetryCount-1))
		tk, ok := m.tasks.load(id)
		require.True(t, ok)
		tk.mu.Lock()
		assert.Equal(t, stateBackoff, tk.state, "waiting out the delay, holding no slot")
		tk.mu.Unlock()
		assert.EqualValues(t, 1, calls.Load())

	case "execute_until_exhausted":
		var calls atomic.Int32
		m := newManager(t, registry(t, map[string]Module{c.TaskInfo.ModuleID: failModule(c.SimulatedFailure, &calls)}))
		id, err := m.Submit(ctx, c.TaskInfo.ModuleID, nil, WithRetry(c.Retry.config()))
		require.NoError(t, err)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, exp["final_status"], string(info.Status))
		assert.EqualValues(t, exp["retry_count"], info.RetryCount)
		assert.Equal(t, exp["error_populated"], info.Error != "")
		assert.EqualValues(t, c.Retry.MaxRetries+1, calls.Load())

	case "wait_and_check_store":
		m := newManager(t, NewRegistry())
		seed(t, m.Store(), c.StoredExp...)
		m.reaperMu.Lock()
		running := m.reaper != nil
		m.reaperMu.Unlock()
		assert.Equal(t, exp["reaper_running"], running)
		for _, old := range c.StoredExp {
			_, err := m.Status(ctx, old.TaskID)
			assert.Equal(t, exp["expired_task_still_present"], err == nil)
		}

	case "trigger_reaper_sweep":
		require.NotNil(t, c.Config.Reaper)
		m := newManager(t, NewRegistry())
		seed(t, m.Store(), c.StoredTasks...)
		ttl := time.Duration(c.Config.Reaper.TTLSeconds * float64(time.Second))
		n, err := m.Reap(ctx, fromUnix(c.NowTS).Add(-ttl))
		require.NoError(t, err)
		deleted := expectedIDs(t, exp["deleted_task_ids"])
		assert.Equal(t, len(deleted), n)
		for _, id := range deleted {
			_, err := m.Status(ctx, id)
			assert.ErrorIs(t, err, ErrTaskNotFound, id)
		}
		left, err := m.List(ctx, "")
		require.NoError(t, err)
		assert.Equal(t, expectedIDs(t, exp["remaining_task_ids"]), taskIDs(left))

	case "submit_over_capacity":
		g := newGate(true)
		m := newManager(t, registry(t, map[string]Module{"long.job": g}),
			WithMaxTasks(c.MaxTasks), WithMaxConcurrent(c.MaxConcurrent))
		var lastErr error
		for i := 0; i < c.SubmitCount; i++ {
			_, err := m.Submit(ctx, "long.job", nil)
			if i < c.MaxTasks {
				require.NoError(t, err)
				continue
			}
			lastErr = err
		}
		require.Error(t, lastErr)
		var typed *Error
		require.ErrorAs(t, lastErr, &typed, "catchable by type")
		assert.Equal(t, c.ExpectedError, string(typed.Code))
		assert.Contains(t, typed.Message, "Task limit")
		g.open()

	case "cancel_during_backoff":
		var calls atomic.Int32
		obs := newObserved()
		m := newManager(t, registry(t, map[string]Module{"always.fails": failModule("boom", &calls)}), WithObserver(obs.observe))
		id, err := m.Submit(ctx, "always.fails", nil, WithRetry(RetryConfig{
			MaxRetries: c.MaxRetries, RetryDelay: ms(c.RetryDelayMS), BackoffMultiplier: c.Backoff,
		}))
		require.NoError(t, err)
		obs.waitFor(t, func(i TaskInfo) bool { return i.TaskID == id && i.RetryCount == 1 })
		before := calls.Load()
		ok, err := m.Cancel(ctx, id)
		require.NoError(t, err)
		require.True(t, ok)
		info, err := m.Wait(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, c.ExpectedFinal, string(info.Status))
		require.NoError(t, m.Shutdown(ctx)) // every goroutine and timer of the task has ended
		if c.NoAttemptsAfter {
			assert.Equal(t, before, calls.Load(), "no attempt after the cancel")
		}

	default:
		t.Fatalf("fixture case %s has action %q, which this driver does not know", c.ID, c.Action)
	}
}

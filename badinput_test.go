package apcore_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/storetest"
)

// Every exported function and option, given nil, empty, negative, huge or
// NaN input, either returns a typed *apcore.Error with a clear message or is
// documented as valid; none panics. Each row says which.
func TestBadInput(t *testing.T) {
	var nilCtx context.Context // a nil context, as a careless caller passes it
	bg := context.Background()
	reg := apcore.NewRegistry()
	if err := reg.Register("bad.input", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		return nil, nil
	})); err != nil {
		t.Fatal(err)
	}
	m, err := apcore.NewTaskManager(reg, apcore.WithMaxConcurrent(0))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Shutdown(bg)
	store := apcore.NewMemoryStore()
	huge := string(make([]byte, 1<<20))
	var nilErr *apcore.Error

	const valid = apcore.ErrorCode("") // documented as valid: no error
	type row struct {
		name string
		want apcore.ErrorCode
		call func() error
	}
	rows := []row{
		// constructor and options
		{"NewTaskManager(nil)", apcore.CodeInvalidInput, func() error { _, err := apcore.NewTaskManager(nil); return err }},
		{"NewTaskManager(typed nil *Registry)", apcore.CodeInvalidInput, func() error {
			var r *apcore.Registry
			_, err := apcore.NewTaskManager(r)
			return err
		}},
		{"NewTaskManager(nil ExecutorFunc)", apcore.CodeInvalidInput, func() error {
			_, err := apcore.NewTaskManager(apcore.ExecutorFunc(nil))
			return err
		}},
		{"Register(nil Module)", apcore.CodeInvalidInput, func() error { return apcore.NewRegistry().Register("a.b", nil) }},
		{"Register(nil ModuleFunc)", apcore.CodeInvalidInput, func() error { return apcore.NewRegistry().Register("a.b", apcore.ModuleFunc(nil)) }},
		{"Register(typed nil Module)", apcore.CodeInvalidInput, func() error {
			var g *nilModule
			return apcore.NewRegistry().Register("a.b", g)
		}},
		{"WithMaxConcurrent(-1)", apcore.CodeInvalidInput, func() error { _, err := apcore.NewTaskManager(reg, apcore.WithMaxConcurrent(-1)); return err }},
		{"WithMaxConcurrent(MaxInt)", valid, func() error {
			mm, err := apcore.NewTaskManager(reg, apcore.WithMaxConcurrent(math.MaxInt))
			if err == nil {
				err = mm.Shutdown(bg)
			}
			return err
		}},
		{"WithMaxTasks(-1)", apcore.CodeInvalidInput, func() error { _, err := apcore.NewTaskManager(reg, apcore.WithMaxTasks(math.MinInt)); return err }},
		{"WithMaxTasks(0) refuses every submit", apcore.CodeTaskLimitExceeded, func() error {
			mm, err := apcore.NewTaskManager(reg, apcore.WithMaxTasks(0))
			if err != nil {
				return err
			}
			defer mm.Shutdown(bg)
			_, err = mm.Submit(bg, "bad.input", nil)
			return err
		}},
		{"WithStore(nil)", apcore.CodeInvalidInput, func() error { _, err := apcore.NewTaskManager(reg, apcore.WithStore(nil)); return err }},
		{"WithLogger(nil) discards", valid, func() error { return shut(apcore.NewTaskManager(reg, apcore.WithLogger(nil))) }},
		{"WithObserver(nil) observes nothing", valid, func() error { return shut(apcore.NewTaskManager(reg, apcore.WithObserver(nil))) }},
		{"WithLeaseTTL(0)", apcore.CodeInvalidInput, func() error { return shut(apcore.NewTaskManager(reg, apcore.WithLeaseTTL(0))) }},
		{"WithLeaseTTL(-1s)", apcore.CodeInvalidInput, func() error { return shut(apcore.NewTaskManager(reg, apcore.WithLeaseTTL(-time.Second))) }},
		{"Subscribe(nil)", apcore.CodeInvalidInput, func() error { _, err := m.Subscribe(nil); return err }},
		{"Drain(nil ctx)", apcore.CodeInvalidInput, func() error { return m.Drain(nilCtx) }},
		{"WithResumable, inputs that do not encode", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", map[string]any{"c": make(chan int)}, apcore.WithResumable())
			return err
		}},
		{"nil Option", apcore.CodeInvalidInput, func() error { _, err := apcore.NewTaskManager(reg, nil); return err }},

		// Submit
		{"Submit(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Submit(nilCtx, "bad.input", nil); return err }},
		// The protocol's newest text: a bad module id is accepted, and the
		// task fails (runner_test.go checks how).
		{"Submit empty id is accepted", valid, func() error { _, err := m.Submit(bg, "", nil); return err }},
		{"Submit huge id is accepted", valid, func() error { _, err := m.Submit(bg, huge, nil); return err }},
		{"Submit unknown module is accepted", valid, func() error { _, err := m.Submit(bg, "not.registered", nil); return err }},
		{"Submit nil inputs", valid, func() error { _, err := m.Submit(bg, "bad.input", nil); return err }},
		{"Submit nil SubmitOption", apcore.CodeInvalidInput, func() error { _, err := m.Submit(bg, "bad.input", nil, nil); return err }},
		{"WithRetry negative MaxRetries", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{MaxRetries: -1}))
			return err
		}},
		{"WithRetry huge MaxRetries", valid, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{MaxRetries: math.MaxInt}))
			return err
		}},
		{"WithRetry NaN multiplier", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{BackoffMultiplier: math.NaN()}))
			return err
		}},
		{"WithRetry +Inf multiplier", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{BackoffMultiplier: math.Inf(1)}))
			return err
		}},
		{"WithRetry multiplier below 1", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{BackoffMultiplier: 0.5}))
			return err
		}},
		{"WithRetry negative delays", apcore.CodeInvalidInput, func() error {
			_, err := m.Submit(bg, "bad.input", nil, apcore.WithRetry(apcore.RetryConfig{MaxRetryDelay: -time.Second}))
			return err
		}},
		{"WithTimeout(-1)", apcore.CodeInvalidInput, func() error { _, err := m.Submit(bg, "bad.input", nil, apcore.WithTimeout(-1)); return err }},
		{"WithTimeout(MaxInt64)", valid, func() error { _, err := m.Submit(bg, "bad.input", nil, apcore.WithTimeout(math.MaxInt64)); return err }},

		// queries
		{"Status(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Status(nilCtx, "x"); return err }},
		{"Status empty id", apcore.CodeTaskNotFound, func() error { _, err := m.Status(bg, ""); return err }},
		{"Result empty id", apcore.CodeTaskNotFound, func() error { _, err := m.Result(bg, ""); return err }},
		{"Result(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Result(nilCtx, "x"); return err }},
		{"Wait(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Wait(nilCtx, "x"); return err }},
		{"Wait empty id", apcore.CodeTaskNotFound, func() error { _, err := m.Wait(bg, ""); return err }},
		{"Cancel(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Cancel(nilCtx, "x"); return err }},
		{"Cancel empty id is false", valid, func() error { _, err := m.Cancel(bg, ""); return err }},
		{"List(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.List(nilCtx, ""); return err }},
		{"List unknown status", apcore.CodeInvalidInput, func() error { _, err := m.List(bg, "PENDING"); return err }},
		{"Cleanup(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Cleanup(nilCtx, 0); return err }},
		{"Cleanup negative age: every terminal record", valid, func() error { _, err := m.Cleanup(bg, math.MinInt64); return err }},
		{"Cleanup huge age", valid, func() error { _, err := m.Cleanup(bg, math.MaxInt64); return err }},
		{"Reap(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.Reap(nilCtx, time.Now()); return err }},
		{"Reap zero time", valid, func() error { _, err := m.Reap(bg, time.Time{}); return err }},
		{"TaskCount(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.TaskCount(nilCtx); return err }},
		{"FailStale(nil ctx)", apcore.CodeInvalidInput, func() error { _, err := m.FailStale(nilCtx, 0); return err }},
		{"FailStale negative age", apcore.CodeInvalidInput, func() error { _, err := m.FailStale(bg, -time.Second); return err }},
		{"FailStale huge age", valid, func() error { _, err := m.FailStale(bg, math.MaxInt64); return err }},

		// reaper and shutdown
		{"StartReaper negative TTL", apcore.CodeInvalidInput, func() error { _, err := m.StartReaper(apcore.ReaperConfig{TTL: -1}); return err }},
		{"StartReaper negative interval", apcore.CodeInvalidInput, func() error {
			_, err := m.StartReaper(apcore.ReaperConfig{SweepInterval: math.MinInt64})
			return err
		}},
		{"StartReaper huge values", valid, func() error {
			h, err := m.StartReaper(apcore.ReaperConfig{TTL: math.MaxInt64, SweepInterval: math.MaxInt64})
			if err == nil {
				err = h.Stop(bg)
			}
			return err
		}},
		{"ReaperHandle.Stop(nil ctx)", apcore.CodeInvalidInput, func() error {
			h, err := m.StartReaper(apcore.ReaperConfig{})
			if err != nil {
				return err
			}
			defer h.Stop(bg)
			return h.Stop(nilCtx)
		}},
		{"Shutdown(nil ctx)", apcore.CodeInvalidInput, func() error { return m.Shutdown(nilCtx) }},

		// retry
		{"ComputeDelay negative attempt", valid, func() error { return delayIn(apcore.DefaultRetryConfig().ComputeDelay(-1)) }},
		{"ComputeDelay huge attempt", valid, func() error { return delayIn(apcore.DefaultRetryConfig().ComputeDelay(math.MaxInt)) }},
		{"ComputeDelay NaN multiplier", valid, func() error {
			return delayIn(apcore.RetryConfig{BackoffMultiplier: math.NaN()}.ComputeDelay(3))
		}},
		{"Permanent(nil) is nil", valid, func() error { return apcore.Permanent(nil) }},

		// registry and ids
		{"Register empty id", apcore.CodeInvalidInput, func() error { return apcore.NewRegistry().Register("", nil) }},
		{"Register nil module", apcore.CodeInvalidInput, func() error { return apcore.NewRegistry().Register("a.b", nil) }},
		{"Register huge id", apcore.CodeInvalidInput, func() error { return apcore.NewRegistry().Register(huge, nil) }},
		{"Registry.Call unknown", apcore.CodeModuleNotFound, func() error { _, err := reg.Call(bg, "", nil); return err }},
		{"ValidateModuleID invalid UTF-8", apcore.CodeInvalidInput, func() error { return apcore.ValidateModuleID("a.\xff") }},

		// wire format
		{"UnmarshalJSON(nil)", apcore.ErrorCode("json"), func() error { var ti apcore.TaskInfo; return ti.UnmarshalJSON(nil) }},
		{"MarshalJSON unencodable result", apcore.ErrorCode("json"), func() error {
			_, err := json.Marshal(apcore.TaskInfo{Result: make(chan int)})
			return err
		}},
		{"MarshalJSON NaN result", apcore.ErrorCode("json"), func() error {
			_, err := json.Marshal(apcore.TaskInfo{Result: math.NaN()})
			return err
		}},

		// memory store
		{"Store.Save empty id", apcore.CodeInvalidInput, func() error { return store.Save(bg, apcore.TaskInfo{Status: apcore.StatusPending}) }},
		{"Store.Save unknown status", apcore.CodeInvalidInput, func() error { return store.Save(bg, apcore.TaskInfo{TaskID: "x"}) }},
		{"Store.SaveIf no states: false", valid, func() error {
			_, err := store.SaveIf(bg, apcore.TaskInfo{TaskID: "x", Status: apcore.StatusPending})
			return err
		}},
		{"Store.Get empty id", apcore.CodeTaskNotFound, func() error { _, err := store.Get(bg, ""); return err }},
		{"Store.List unknown status", apcore.CodeInvalidInput, func() error { _, err := store.List(bg, "done"); return err }},
		{"Store.Count unknown status", apcore.CodeInvalidInput, func() error { _, err := store.Count(bg, "done"); return err }},
		{"Store.Delete empty id", valid, func() error { return store.Delete(bg, "") }},
		{"Store.ListExpired zero time", valid, func() error { _, err := store.ListExpired(bg, time.Time{}); return err }},

		// errors and the checker
		{"CodeOf(nil)", valid, func() error { return codeIs(apcore.CodeOf(nil), "") }},
		{"nil *Error methods", valid, func() error {
			if nilErr.Error() == "" || nilErr.Unwrap() != nil || nilErr.Is(apcore.ErrTaskNotFound) {
				return errors.New("nil *Error misbehaves")
			}
			return nil
		}},
		{"CloneResult(nil)", valid, func() error {
			if apcore.CloneResult(nil) != nil {
				return errors.New("CloneResult(nil) is not nil")
			}
			return nil
		}},
		{"storetest.TestStore(nil, nil)", apcore.CodeInvalidInput, func() error { return storetest.TestStore(nilCtx, nil) }},
	}
	for _, r := range rows {
		t.Run(r.name, func(t *testing.T) {
			var err error
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("panicked: %v", p)
					}
				}()
				err = r.call()
			}()
			switch r.want {
			case valid:
				if err != nil {
					t.Fatalf("documented as valid, got %v", err)
				}
			case "json": // encoding/json's own errors, not ours
				if err == nil {
					t.Fatal("want an error")
				}
			default:
				var typed *apcore.Error
				if !errors.As(err, &typed) || typed.Code != r.want {
					t.Fatalf("want a *apcore.Error with code %s, got %T %v", r.want, err, err)
				}
				if typed.Message == "" {
					t.Fatalf("the error has no message: %v", err)
				}
			}
		})
	}
}

// shut shuts down a manager the row made, so that it leaves no goroutine.
func shut(m *apcore.TaskManager, err error) error {
	if err != nil {
		return err
	}
	return m.Shutdown(context.Background())
}

func delayIn(d time.Duration) error {
	if d < 0 || d > 60*time.Second {
		return errors.New("delay out of range: " + d.String())
	}
	return nil
}

func codeIs(got, want apcore.ErrorCode) error {
	if got != want {
		return errors.New("code " + string(got))
	}
	return nil
}

// nilModule is a Module whose nil pointer would panic when executed.
type nilModule struct{ v any }

func (n *nilModule) Execute(context.Context, map[string]any) (any, error) { return n.v, nil }

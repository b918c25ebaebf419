package apcore

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule submits a task at every tick of Spec.
type Schedule struct {
	// Name identifies the schedule: same rules as a module id
	// (ValidateModuleID). Every replica that adds a schedule of this name
	// shares its ticks.
	Name string
	// Spec is "@every 30s", "@hourly", "@daily" (and the other
	// descriptors of github.com/robfig/cron/v3: @yearly, @monthly,
	// @weekly, @midnight), or five cron fields ("*/5 * * * *": minute,
	// hour, day of month, month, day of week). Times are UTC unless the
	// spec starts "CRON_TZ=<zone> " (an IANA zone such as
	// "CRON_TZ=Europe/Berlin 30 2 * * *"); across a daylight-saving change
	// the cron library's rules apply (a time that a change skips does not
	// tick; one it repeats ticks at each of its two instants). "@every d" ticks at the multiples
	// of d since the Unix epoch (d of a second or more, truncated to the
	// second), so that replicas that added it at different times tick
	// together.
	Spec string
	// ModuleID is the module each tick's task runs.
	ModuleID string
	// Inputs are each tick's task's inputs; they must encode as JSON when
	// Options include WithResumable. They are shared by every tick's task:
	// do not change them after AddSchedule.
	Inputs map[string]any
	// Options apply to each tick's task, e.g. WithRetry, WithResumable,
	// WithPriority. A WithUniqueKey among them is replaced by the tick's
	// own key, and WithRunAt, WithDelay and WithTx are refused.
	Options []SubmitOption
	// SkipWhileActive skips a tick while a task of an earlier tick of this
	// schedule is still pending or running.
	SkipWhileActive bool
}

// AddSchedule starts submitting s's ticks. A bad name or spec (the error
// names the field of the spec and the rule), a bad option, or a name this
// manager has already: GENERAL_INVALID_INPUT; after Shutdown or Drain:
// TASK_MANAGER_CLOSED.
//
// Every replica of a service adds the same schedules; however many
// managers sharing one store have added s, each tick makes exactly one
// task: each tick's task carries a unique key made from the name and the
// tick's time (see WithUniqueKey), "schedule:<name>:<Unix seconds>", so
// the store keeps one record of it whichever replica's Submit came first.
// With a store that is not a SharedStore, the manager alone makes the
// ticks. A tick that falls while no manager with s runs is not made up
// later; a replica whose clock is behind the others' by more than a tick's
// task takes to fail or be cancelled could make that tick again. A tick's
// Submit that fails (a full store, a store that is down) is logged, and
// the schedule goes on with the next tick.
//
// RemoveSchedule reports whether s was there; Shutdown and Drain stop
// every schedule.
func (m *TaskManager) AddSchedule(s Schedule) error {
	when, err := parseSchedule(s.Spec)
	if err != nil {
		return err
	}
	if err := ValidateModuleID(s.Name); err != nil {
		return invalidf("AddSchedule: the name: %v", err)
	}
	sc, err := submitOptions(s.Options)
	if err != nil {
		return invalidf("AddSchedule %s: %v", s.Name, err)
	}
	if !sc.runAt.IsZero() || sc.tx != nil {
		return invalidf("AddSchedule %s: WithRunAt, WithDelay and WithTx do not apply to a schedule's tasks", s.Name)
	}
	if sc.resumable {
		if _, err := json.Marshal(s.Inputs); err != nil {
			return &Error{Code: CodeInvalidInput, Message: "AddSchedule " + s.Name + ": the inputs of a resumable schedule must encode as JSON", Cause: err}
		}
	}
	r := &scheduleRun{m: m, s: s, when: when, stop: make(chan struct{})}
	r.s.Options = append(s.Options[:len(s.Options):len(s.Options)], nil) // the tick's key goes last
	set := &m.schedules
	set.mu.Lock()
	defer set.mu.Unlock()
	if set.closed || m.closed.Load() {
		return errClosed()
	}
	if _, ok := set.runs[s.Name]; ok {
		return invalidf("AddSchedule: a schedule named %q is there already", s.Name)
	}
	if set.runs == nil {
		set.runs = make(map[string]*scheduleRun)
	}
	set.runs[s.Name] = r
	m.wg.Add(1) // Shutdown waits for the schedule's goroutine
	go r.loop()
	return nil
}

// RemoveSchedule stops the schedule named name and reports whether it was
// there. A tick's task already submitted is not affected.
func (m *TaskManager) RemoveSchedule(name string) bool {
	set := &m.schedules
	set.mu.Lock()
	r, ok := set.runs[name]
	delete(set.runs, name)
	set.mu.Unlock()
	if ok {
		close(r.stop)
	}
	return ok
}

// scheduleSet holds a manager's schedules.
type scheduleSet struct {
	mu     sync.Mutex
	runs   map[string]*scheduleRun
	closed bool
}

// stopAll stops every schedule, for Shutdown and Drain; their goroutines
// end on their own, and the WaitGroup waits for them.
func (set *scheduleSet) stopAll() {
	set.mu.Lock()
	defer set.mu.Unlock()
	set.closed = true
	for name, r := range set.runs {
		close(r.stop)
		delete(set.runs, name)
	}
}

// scheduleRun is one schedule's goroutine and what it remembers.
type scheduleRun struct {
	m    *TaskManager
	s    Schedule
	when cron.Schedule
	stop chan struct{}
	last string // the task of the latest tick this manager saw (made or found)
}

// loop waits for each tick and submits its task, until stopped.
func (r *scheduleRun) loop() {
	defer r.m.wg.Done()
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		tick := r.when.Next(time.Now())
		timer.Reset(time.Until(tick))
		select {
		case <-r.stop:
			return
		case <-timer.C:
		}
		if !r.fire(tick) {
			return
		}
	}
}

// fire submits tick's task, unless SkipWhileActive finds the previous
// tick's task active. It reports false once the manager is closed.
func (r *scheduleRun) fire(tick time.Time) bool {
	m := r.m
	ctx, cancel := m.ownCtx()
	defer cancel()
	if r.s.SkipWhileActive && r.last != "" {
		info, err := m.Status(ctx, r.last)
		if err == nil && info.Status.IsActive() {
			m.log.Debug("apcore: schedule tick skipped: the previous tick's task is active", "schedule", r.s.Name, "tick", tick, "task_id", r.last)
			return true
		}
	}
	key := fmt.Sprintf("schedule:%s:%d", r.s.Name, tick.Unix())
	r.s.Options[len(r.s.Options)-1] = WithUniqueKey(key)
	if m.shared == nil {
		r.s.Options[len(r.s.Options)-1] = noOption
	}
	id, err := m.Submit(ctx, r.s.ModuleID, r.s.Inputs, r.s.Options...)
	switch {
	case err == nil, errors.Is(err, ErrDuplicateTask):
		r.last = id
	case errors.Is(err, ErrManagerClosed):
		return false
	default:
		m.log.Warn("apcore: a schedule's tick could not submit its task", "schedule", r.s.Name, "tick", tick, "error", err)
	}
	return true
}

// noOption is a SubmitOption that does nothing.
func noOption(*submitConfig) {}

// cronFields names the five fields of a cron spec, in order.
var cronFields = [...]string{"minute", "hour", "day of month", "month", "day of week"}

// parseSchedule parses a Schedule's Spec, naming the field and the rule
// that a bad one breaks.
func parseSchedule(spec string) (cron.Schedule, error) {
	bad := func(format string, args ...any) error {
		return invalidf("AddSchedule: spec %q: "+format, append([]any{spec}, args...)...)
	}
	if strings.TrimSpace(spec) == "" {
		return nil, bad("empty; want @every <duration>, a descriptor such as @hourly, or five cron fields")
	}
	if rest, ok := strings.CutPrefix(strings.TrimSpace(spec), "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second {
			return nil, bad("@every needs a duration of 1s or more, such as @every 30s")
		}
	}
	sched, err := cron.ParseStandard(spec)
	if err == nil {
		if every, ok := sched.(cron.ConstantDelaySchedule); ok {
			return alignedEvery{every.Delay}, nil
		}
		return sched, nil
	}
	body := spec
	if rest, ok := strings.CutPrefix(body, "CRON_TZ="); ok {
		zone, fields, found := strings.Cut(rest, " ")
		if !found {
			return nil, bad("CRON_TZ=<zone> must be followed by a space and the schedule")
		}
		if _, zerr := time.LoadLocation(zone); zerr != nil {
			return nil, bad("unknown time zone %q: %v", zone, zerr)
		}
		body = strings.TrimSpace(fields)
	}
	if strings.HasPrefix(body, "@") {
		return nil, bad("%v", err)
	}
	fields := strings.Fields(body)
	if len(fields) != len(cronFields) {
		return nil, bad("want 5 fields (minute hour day-of-month month day-of-week), found %d", len(fields))
	}
	for i, f := range fields {
		probe := []string{"*", "*", "*", "*", "*"}
		probe[i] = f
		if _, ferr := cron.ParseStandard(strings.Join(probe, " ")); ferr != nil {
			return nil, bad("field %d (%s) %q: %v", i+1, cronFields[i], f, ferr)
		}
	}
	return nil, bad("%v", err)
}

// alignedEvery is "@every d" ticking at the multiples of d since the Unix
// epoch, so that every replica computes the same ticks whenever it
// started (the cron library's own counts from the time it is asked).
type alignedEvery struct{ d time.Duration }

// Next returns the first multiple of d since the Unix epoch after t. (Not
// t.Truncate(d), which counts from the zero time, January 1 of year 1: a d
// that does not divide 62,135,596,800 s, such as 7s or 168h, would tick
// off the epoch's multiples.) d is whole seconds: the cron library's Every
// drops the rest.
func (a alignedEvery) Next(t time.Time) time.Time {
	secs := int64(a.d / time.Second)
	s := t.Unix() // seconds, rounded down even before 1970
	n := s / secs
	if s%secs < 0 {
		n--
	}
	return time.Unix((n+1)*secs, 0).In(t.Location())
}

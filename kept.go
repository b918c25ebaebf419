package apcore

import (
	"context"
	"time"
)

// When the store refuses a task's terminal record even after finish's
// retries, the manager keeps the record in memory (kept), so that Status,
// Result, Wait and Cancel on this manager still report the outcome. A
// background writer (outcomeWriter) tries the store again, with backoff, until
// it has taken every kept outcome, so that other replicas see the outcomes
// as soon as the store answers; Status, Wait, Cancel and Shutdown also try
// at once. Kept outcomes are bounded (maxKept): past the bound, a worker
// with an outcome to write keeps its slot and retries until the store
// answers (or the manager shuts down), so an outage stalls new starts
// instead of growing memory.

// maxKept bounds the outcomes kept in memory during a store outage.
const maxKept = 10_000

// Backoff of the background writer.
const (
	writeBackFirst = 50 * time.Millisecond
	writeBackMax   = 5 * time.Second
)

// keptOutcome is a kept terminal record, and the manager id that held the
// task when it ended (for a SharedStore's Update).
type keptOutcome struct {
	info   TaskInfo
	holder string
}

// keep keeps a terminal record that the store refused, and makes sure the
// background writer runs.
func (m *TaskManager) keep(info *TaskInfo, holder string) {
	m.kept.store(info.TaskID, &keptOutcome{info: *info, holder: holder})
	m.nKept.Add(1)
	if m.writingBack.CompareAndSwap(false, true) {
		m.wg.Add(1) // the worker calling keep holds the WaitGroup above zero
		go outcomeWriter{m}.run()
	}
}

// outcomeWriter is the component that writes kept outcomes to the store
// once it answers again. It runs only while outcomes are kept: keep starts
// it, and it ends when none is left (or the manager closes).
type outcomeWriter struct{ m *TaskManager }

// runOnce tries once to write every kept outcome, each write bounded by
// the store timeout, and returns how many the store still refuses.
func (w outcomeWriter) runOnce(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, w.m.storeTimeout)
	defer cancel()
	return w.m.flushKept(ctx)
}

// run calls runOnce until no outcome is left, pausing with backoff while
// the store refuses them. It stops when the manager shuts down (Shutdown
// makes the last try itself).
func (w outcomeWriter) run() {
	m := w.m
	defer m.wg.Done()
	pause := writeBackFirst
	for {
		timer := time.NewTimer(pause)
		select {
		case <-m.closing:
			timer.Stop()
			m.writingBack.Store(false)
			return
		case <-timer.C:
		}
		left := w.runOnce(context.Background())
		if left == 0 {
			m.writingBack.Store(false)
			if m.nKept.Load() == 0 || !m.writingBack.CompareAndSwap(false, true) {
				return // done, or a newer writer took over
			}
			pause = writeBackFirst
			continue
		}
		pause = min(pause*2, writeBackMax)
	}
}

// keptFull reports whether no more outcomes may be kept.
func (m *TaskManager) keptFull() bool { return m.nKept.Load() >= maxKept }

// keptOutcome returns the kept outcome of a task whose terminal record the
// store refused, after one more try at writing it.
func (m *TaskManager) keptOutcome(ctx context.Context, taskID string) (TaskInfo, bool) {
	if m.nKept.Load() == 0 {
		return TaskInfo{}, false
	}
	kept, ok := m.kept.load(taskID)
	if !ok {
		return TaskInfo{}, false
	}
	info, err := callFor(m, ctx, "write a kept outcome", func(ctx context.Context) (TaskInfo, error) {
		info, _ := m.writeKept(ctx, kept)
		return info, nil
	})
	if err != nil { // the store did not answer in time: the kept record is the outcome
		return kept.info.clone(), true
	}
	return info, true
}

// isKept reports whether the task's outcome is kept here, unwritten.
func (m *TaskManager) isKept(taskID string) bool {
	if m.nKept.Load() == 0 {
		return false
	}
	_, ok := m.kept.load(taskID)
	return ok
}

// flushKept tries once more to write every kept outcome and returns how
// many the store still refuses.
func (m *TaskManager) flushKept(ctx context.Context) int {
	if m.nKept.Load() == 0 {
		return 0
	}
	left := 0
	for _, kept := range m.kept.values() {
		if _, written := m.writeKept(ctx, kept); !written {
			left++
		}
	}
	return left
}

// writeKept tries once more to write a kept outcome, and forgets it once
// the store holds a terminal record. It returns what the task ended as (the
// store's record if another writer got there first) and whether the store
// now has it.
func (m *TaskManager) writeKept(ctx context.Context, kept *keptOutcome) (TaskInfo, bool) {
	info := kept.info.clone()
	// A handle for the write alone: the task has ended here.
	res, err := m.write(ctx, &task{id: info.TaskID, holder: kept.holder}, &info)
	if err != nil {
		return kept.info.clone(), false
	}
	if res == movedOn { // another manager holds it now: this outcome is void
		if info, err = m.store.Get(ctx, info.TaskID); err != nil {
			return kept.info.clone(), false
		}
	}
	if m.kept.remove(kept.info.TaskID) {
		m.nKept.Add(-1)
	}
	return info, true
}

package apcore

import "context"

// When the store refuses a task's terminal record even after finish's
// retries, the manager keeps the record in memory (kept), so that Status,
// Result, Wait and Cancel on this manager still report the outcome; each of
// them, and Shutdown, tries to write it again, and forgets it once the store
// holds a terminal record.

// keptOutcome is a kept terminal record, and the manager id that held the
// task when it ended (for a SharedStore's Update).
type keptOutcome struct {
	info   TaskInfo
	holder string
}

// keep keeps a terminal record that the store refused.
func (m *TaskManager) keep(info *TaskInfo, holder string) {
	m.kept.store(info.TaskID, &keptOutcome{info: *info, holder: holder})
	m.nKept.Add(1)
}

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
	info, _ := m.writeKept(ctx, kept)
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
	var err error
	if m.shared != nil && kept.holder != "" {
		var ok bool
		ok, err = m.shared.Update(ctx, StoredTask{Info: info, Owner: kept.holder}, kept.holder)
		if err == nil && !ok {
			_, err = m.storedOutcome(ctx, &info)
			if err == nil && info.Status.IsActive() {
				// Another manager holds it now: this outcome is void.
				info, err = m.store.Get(ctx, info.TaskID)
			}
		}
	} else {
		_, err = m.write(ctx, nil, &info)
	}
	if err != nil {
		return kept.info.clone(), false
	}
	if m.kept.remove(kept.info.TaskID) {
		m.nKept.Add(-1)
	}
	return info, true
}

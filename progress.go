package apcore

import (
	"context"
	"strings"
	"time"
)

// progressWriteDelay is how long a progress report waits before it is
// written to the store, so that a module reporting in a tight loop costs at
// most a few writes a second; the latest value is the one written.
const progressWriteDelay = 250 * time.Millisecond

// maxProgressMessage bounds a progress message, in bytes.
const maxProgressMessage = 4096

// ReportProgress records a running task's progress (0-100; outside that
// range, or NaN, is GENERAL_INVALID_INPUT) and a short message (at most 4
// KiB; invalid UTF-8 and NUL bytes are replaced). A module calls it with
// the context it was given, or one derived from it; any other context is
// GENERAL_INVALID_INPUT. Status, Wait, List and the observers see it at once
// on the owning manager; the store gets the latest value within a quarter
// of a second (writes are coalesced), so other replicas see it too. A
// report after the task has ended, or while it is not running, is ignored.
// A progress report does not renew the task's lease: the manager renews
// leases on its own, whatever the module reports.
func ReportProgress(ctx context.Context, percent float64, message string) error {
	if ctx == nil {
		return invalidf("ReportProgress: the context is nil")
	}
	if !(percent >= 0 && percent <= 100) {
		return invalidf("ReportProgress: %v is not a percentage from 0 to 100", percent)
	}
	if len(message) > maxProgressMessage {
		return invalidf("ReportProgress: the message is %d bytes long; the limit is %d", len(message), maxProgressMessage)
	}
	tc, _ := ctx.Value(taskKey{}).(*taskCtx)
	if tc == nil || tc.task == nil {
		return invalidf("ReportProgress: the context is not a task's (pass the context the module was given)")
	}
	// The replacement can make the message longer (one byte becomes three),
	// so the limit is checked again on what would be kept.
	message = strings.ReplaceAll(strings.ToValidUTF8(message, "\uFFFD"), "\x00", "\uFFFD")
	if len(message) > maxProgressMessage {
		return invalidf("ReportProgress: the message is %d bytes long once its NUL bytes and invalid UTF-8 are replaced with U+FFFD; the limit is %d", len(message), maxProgressMessage)
	}
	tc.m.reportProgress(tc.task, percent, message)
	return nil
}

// reportProgress keeps the task's progress, announces it, and makes sure a
// store write is due.
func (m *TaskManager) reportProgress(t *task, percent float64, message string) {
	t.mu.Lock()
	if t.state != stateRunning {
		t.mu.Unlock()
		return
	}
	t.progress, t.progressMsg = percent, message
	var info TaskInfo
	t.record(&info, StatusRunning)
	announce := m.emit(t, &info)
	if t.progressTimer == nil {
		m.wg.Add(1) // done by writeProgress, or by done when it stops the timer
		t.progressTimer = time.AfterFunc(progressWriteDelay, func() { m.writeProgress(t) })
	}
	t.mu.Unlock()
	if announce {
		m.deliver(t, &info)
	}
}

// writeProgress writes the latest progress of a running task. When the
// store shows the task already ended (cancelled by another replica, say),
// the module is interrupted and the task ends as the store says.
func (m *TaskManager) writeProgress(t *task) {
	defer m.wg.Done()
	t.mu.Lock()
	t.progressTimer = nil
	if t.state != stateRunning {
		t.mu.Unlock()
		return
	}
	var info TaskInfo
	t.record(&info, StatusRunning)
	seq := t.decided()
	t.mu.Unlock()
	m.recordRunning(t, &info, seq, "apcore: could not record a task's progress")
}

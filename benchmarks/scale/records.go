package main

import (
	"time"

	"github.com/apcore-go/apcore"
	"github.com/google/uuid"
)

// What a filled store holds: n records in insertion order, oldest first.
// All but the last pendingCount(n) are finished: one in 200 failed, one in
// 200 cancelled, the rest completed with a small result, spread over the
// two days before the fill so that every one has expired for Reap. The
// last pendingCount(n) are pending (a recent backlog nobody holds), so that
// a filtered page has to find a few hundred records among all the others.

// modules are the module ids the records are spread over.
var modules = []string{
	"report.build", "email.send", "image.resize", "invoice.render",
	"search.index", "user.export", "cache.warm", "data.process_batch",
}

// pendingCount is how many of n records are pending: 200, or 2% of a
// small store.
func pendingCount(n int) int { return min(200, n/50) }

// the layout of record i in a store of n: its status and module.
const (
	failedEvery = 200 // i%failedEvery == failedAt: failed
	failedAt    = 7
	cancelledAt = 13 // i%failedEvery == cancelledAt: cancelled
)

// statusOf is the status of record i of n.
func statusOf(i, n int) apcore.TaskStatus {
	switch {
	case i >= n-pendingCount(n):
		return apcore.StatusPending
	case i%failedEvery == failedAt:
		return apcore.StatusFailed
	case i%failedEvery == cancelledAt:
		return apcore.StatusCancelled
	}
	return apcore.StatusCompleted
}

// spread is the time the finished records' submissions are spread over,
// ending an hour before the fill.
const spread = 48 * time.Hour

// record returns record i of a store of n filled at now.
func record(i, n int, now time.Time) apcore.TaskInfo {
	status := statusOf(i, n)
	t := apcore.TaskInfo{
		TaskID:   uuid.NewString(),
		ModuleID: modules[i%len(modules)],
		Status:   status,
	}
	if status == apcore.StatusPending {
		t.SubmittedAt = now.Add(-time.Duration(n-i) * time.Millisecond).UTC().Truncate(time.Microsecond)
		return t
	}
	begin := now.Add(-spread - time.Hour)
	t.SubmittedAt = begin.Add(time.Duration(int64(spread) / int64(n) * int64(i))).UTC().Truncate(time.Microsecond)
	t.StartedAt = t.SubmittedAt.Add(5 * time.Millisecond)
	t.CompletedAt = t.StartedAt.Add(time.Duration(20+i%80) * time.Millisecond)
	switch status {
	case apcore.StatusCompleted:
		t.Result = map[string]any{"rows": float64(i % 1000), "ok": true}
	case apcore.StatusFailed:
		t.Error = "upstream answered 503"
		t.ErrorCode = apcore.CodeModuleExecuteError
		t.RetryCount, t.MaxRetries = 2, 2
	}
	return t
}

package apcorehttp

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
)

// GET /api/tasks pages the store with the manager's ListPage, so that a
// request costs the page it answers, never the records the store keeps.
//
// Without a filter of the handler's (module, status=scheduled, unique_key)
// or an offset, a request is one ListPage call of the limit asked for, and
// "next" is the store's own cursor. It counts nothing: a count can cost
// what the store keeps (PostgreSQL counts the completed records one by
// one), so the counts are GET /api/summary's. The store cannot filter by
// module, by run_at or by unique key, and cannot start at an offset: such
// a request reads store pages of 1,000 records (of the status asked for:
// the pending ones for status=scheduled), keeping the matching ones, until
// it has limit of them or has read scanBudget records (plus offset, for an
// offset), and its "next" (a cursor of this handler: the store's cursor of
// the page it stopped in, and the last record it kept there) carries on
// from where it stopped. So a filtered request may answer fewer than limit
// records, even none, with a "next": the answer says how many records it
// read ("scanned"). A unique key is looked up the same way: the core has
// no store lookup by key to call.

const (
	// defaultLimit is the page size of a request without limit.
	defaultLimit = apcore.DefaultPageLimit
	// maxOffset is the largest offset accepted; further pages are reached
	// with after.
	maxOffset = 10_000
	// scanBudget is the most records a filtered request reads.
	scanBudget = 10_000
	// scanPrefix starts the cursors this handler makes (the others are the
	// store's).
	scanPrefix = "~h."
	// maxCursor is the longest cursor accepted.
	maxCursor = 1024
	// maxUniqueKey is the longest unique key the core accepts (bytes).
	maxUniqueKey = 256
	// statusScheduled is the status parameter of the pending records whose
	// run_at is in the future: not a state of the core, a filter of this
	// handler's.
	statusScheduled = "scheduled"
)

// listQuery is a request of GET /api/tasks.
type listQuery struct {
	status    apcore.TaskStatus
	scheduled bool // status=scheduled: pending, with run_at in the future
	module    string
	uniqueKey string
	newest    bool // order=desc
	after     string
	limit     int
	offset    int
}

// badRequest is a GENERAL_INVALID_INPUT error (answered with 400).
func badRequest(format string, a ...any) error {
	return &apcore.Error{Code: apcore.CodeInvalidInput, Message: fmt.Sprintf(format, a...)}
}

// parseListQuery reads GET /api/tasks's parameters.
func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{status: apcore.TaskStatus(q.Get("status")), module: q.Get("module"), uniqueKey: q.Get("unique_key"), after: q.Get("after"), limit: defaultLimit}
	if lq.status == statusScheduled {
		lq.status, lq.scheduled = apcore.StatusPending, true
	}
	if lq.status != "" && !lq.status.Valid() {
		return lq, badRequest("unknown status %s: one of pending, scheduled, running, completed, failed, cancelled", strconv.Quote(string(lq.status)))
	}
	if len(lq.uniqueKey) > maxUniqueKey {
		return lq, badRequest("unique_key is %d bytes; a unique key has at most %d", len(lq.uniqueKey), maxUniqueKey)
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		lq.newest = true
	default:
		return lq, badRequest(`order must be "asc" or "desc"`)
	}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > apcore.MaxPageLimit {
			return lq, badRequest("limit must be a whole number from 1 to %d", apcore.MaxPageLimit)
		}
		lq.limit = n
	}
	if s := q.Get("offset"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxOffset {
			return lq, badRequest("offset must be a whole number from 0 to %d; page further with after (each answer's next)", maxOffset)
		}
		lq.offset = n
	}
	if lq.offset > 0 && lq.after != "" {
		return lq, badRequest("offset and after do not go together: after alone carries on")
	}
	if len(lq.after) > maxCursor {
		return lq, badRequest("the cursor is %d bytes; no answer gives one that long", len(lq.after))
	}
	return lq, nil
}

// listAnswer is what a page of GET /api/tasks holds.
type listAnswer struct {
	tasks   []apcore.TaskInfo
	next    string
	scanned int // records read, when filtered; else -1
}

// filtered reports whether lq keeps only some of the records the store
// pages: by module, run_at or unique key.
func (lq listQuery) filtered() bool {
	return lq.module != "" || lq.scheduled || lq.uniqueKey != ""
}

// keeps reports whether t passes lq's filters of the handler's; now is
// the time a scheduled task's run_at must be after.
func (lq listQuery) keeps(t *apcore.TaskInfo, now time.Time) bool {
	switch {
	case lq.module != "" && t.ModuleID != lq.module:
		return false
	case lq.uniqueKey != "" && t.UniqueKey != lq.uniqueKey:
		return false
	case lq.scheduled && (t.Status != apcore.StatusPending || t.RunAt == nil || !t.RunAt.After(now)):
		return false
	}
	return true
}

// list answers lq: one ListPage call, or a scan (a filter, offset, or a
// cursor of a scan).
func (h *handler) list(ctx context.Context, lq listQuery) (listAnswer, error) {
	if !lq.filtered() && lq.offset == 0 && !strings.HasPrefix(lq.after, scanPrefix) {
		page, err := h.mgr.ListPage(ctx, apcore.ListOptions{Status: lq.status, After: lq.after, Limit: lq.limit, Newest: lq.newest})
		if err != nil {
			return listAnswer{}, err
		}
		return listAnswer{tasks: page.Tasks, next: page.Next, scanned: -1}, nil
	}
	return h.scan(ctx, lq)
}

// scan reads store pages of 1,000 records from lq.after, skipping
// lq.offset matching records, until it has lq.limit records that pass
// lq's filters (any record when there is none), or the budget is spent, or
// the store has no more.
func (h *handler) scan(ctx context.Context, lq listQuery) (listAnswer, error) {
	after, skipID, skipPos, err := decodeCursor(lq.after)
	if err != nil {
		return listAnswer{}, err
	}
	ans := listAnswer{tasks: []apcore.TaskInfo{}}
	skip := lq.offset
	budget := scanBudget + lq.offset
	if !lq.filtered() {
		budget = lq.offset + lq.limit
	}
	now := time.Now()
	for {
		page, err := h.mgr.ListPage(ctx, apcore.ListOptions{Status: lq.status, After: after, Limit: apcore.MaxPageLimit, Newest: lq.newest})
		if err != nil {
			return listAnswer{}, err
		}
		recs := page.Tasks
		i := 0
		if skipID != "" {
			// Carry on after the record the last answer ended with; when
			// it is gone, at its position.
			i = min(skipPos, len(recs))
			for j := range recs {
				if recs[j].TaskID == skipID {
					i = j + 1
					break
				}
			}
			skipID = ""
		}
		for ; i < len(recs); i++ {
			ans.scanned++
			t := &recs[i]
			if !lq.keeps(t, now) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			ans.tasks = append(ans.tasks, *t)
			if len(ans.tasks) == lq.limit {
				if i+1 < len(recs) {
					ans.next = encodeCursor(after, t.TaskID, i+1)
				} else {
					ans.next = page.Next
				}
				return ans.done(lq), nil
			}
		}
		if page.Next == "" || len(recs) == 0 {
			return ans.done(lq), nil
		}
		after = page.Next
		if ans.scanned >= budget {
			ans.next = after
			return ans.done(lq), nil
		}
	}
}

// done finishes a scan's answer: scanned is reported for a filter.
func (a listAnswer) done(lq listQuery) listAnswer {
	if !lq.filtered() {
		a.scanned = -1
	}
	return a
}

// encodeCursor makes a cursor of this handler: carry on from the store's
// cursor after, past the record id, which was at position pos of the page
// there.
func encodeCursor(after, id string, pos int) string {
	raw := strconv.Itoa(pos) + "\x00" + id + "\x00" + after
	return scanPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor reads a cursor: one of this handler's, or the store's.
func decodeCursor(c string) (after, id string, pos int, err error) {
	rest, ok := strings.CutPrefix(c, scanPrefix)
	if !ok {
		return c, "", 0, nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(rest)
	if err == nil {
		parts := strings.SplitN(string(raw), "\x00", 3)
		if len(parts) == 3 {
			if n, err := strconv.Atoi(parts[0]); err == nil && n >= 0 && n <= apcore.MaxPageLimit && parts[1] != "" {
				return parts[2], parts[1], n, nil
			}
		}
	}
	return "", "", 0, badRequest("the cursor %s was not made by this handler", strconv.Quote(c))
}

// listTasks is GET /api/tasks.
func (h *handler) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	lq, err := parseListQuery(q)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	ans, err := h.list(r.Context(), lq)
	if err != nil {
		writeStoreError(w, err)
		return
	}
	h.cache.noteModulesOf(ans.tasks)
	if ans.next != "" {
		q.Del("offset")
		q.Set("after", ans.next)
		w.Header().Set("Link", "<tasks?"+q.Encode()+`>; rel="next"`)
	}
	writeBody(w, http.StatusOK, appendList(nil, ans.tasks, ans.next, ans.scanned))
}

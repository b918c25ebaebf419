package apcorehttp

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/apcore-go/apcore"
)

// How the event stream works. The manager's observer (observe) copies a
// few fields of each record into a buffer under a mutex and returns: it
// never encodes, never touches a client and never waits for one. One
// goroutine of the hub (flusher) takes the buffer at most every
// flushInterval, keeps the latest event of each task, encodes the batch
// once and hands the same bytes to every client's queue without blocking:
// a client whose queue holds more than clientQueueBytes is dropped. Each
// client's handler writes what its queue holds with a write deadline
// (writeTimeout), so a client that stops reading is dropped too; an
// EventSource reconnects on its own. When more events arrive between two
// flushes than maxBatch, the batch is replaced by one "resync" event: the
// page reloads what it shows instead of following each task.

// localQuiet is how long after this manager's own event about a task the
// poller leaves that task alone: the store may still hold an older
// progress value (writes are coalesced for a quarter of a second), and the
// observer already reported it.
const localQuiet = 3 * time.Second

// endedMemory is how long the poller remembers that a task ended, so that
// a List taken before the end does not bring it back; maxEnded bounds how
// many it remembers.
const (
	endedMemory = 10 * time.Second
	maxEnded    = 1 << 14
)

// maxMessage is the most bytes of a progress message an event carries; the
// record (GET /api/tasks/{id}) has all of it.
const maxMessage = 1024

// hub fans the events out to the connected clients. While any client is
// connected it subscribes to the manager, polls the store's active records
// and runs the flusher; with none, it runs no goroutine at all.
type hub struct {
	mgr *apcore.TaskManager
	cfg config

	lifeMu sync.Mutex         // serialises starting and stopping
	stop   context.CancelFunc // ends the poller and the flusher
	wg     sync.WaitGroup     // the poller and the flusher
	unsub  func()

	mu      sync.Mutex // guards the fields below
	clients map[*client]struct{}
	serving int           // handlers of GET /api/events that have not returned
	running bool          // subscribed, polling and flushing
	changed chan struct{} // closed and replaced when the three above change

	// The observer's buffer, in shards by task id (a task's events stay
	// in order in its shard), so that the manager's goroutines seldom
	// wait for each other.
	shards [numShards]shard
	woken  atomic.Bool // the flusher has been told about this batch
	wake   chan struct{}
	// busyAt is when a batch last overflowed (Unix nanoseconds): while
	// the stream sends resync events, the poller reports nothing either.
	busyAt atomic.Int64

	stateMu sync.Mutex
	known   map[string]seen      // active tasks as last reported
	ended   map[string]time.Time // tasks that ended lately
}

// seen is what the hub last reported of an active task.
type seen struct {
	key     recordKey
	localAt time.Time // when this manager's observer last reported it
}

// recordKey is what makes two reports of an active task differ.
type recordKey struct {
	status   apcore.TaskStatus
	retries  int
	progress float64
	started  int64
	message  string
}

func keyOf(t *apcore.TaskInfo) recordKey {
	return recordKey{t.Status, t.RetryCount, t.Progress, t.StartedAt.UnixNano(), t.ProgressMessage}
}

// event is what the stream sends of a record: everything but the result,
// the error (which can be large: the page reads them with the record) and
// the unique key (up to 256 bytes of no use to a row: the detail view
// reads it with the record too).
type event struct {
	id, module                    string
	status                        apcore.TaskStatus
	submitted, started, completed time.Time
	runAt                         time.Time // zero: none
	retries, maxRetries           int
	priority                      int
	progress                      float64
	message                       string
	code                          apcore.ErrorCode
	local                         bool // from this manager's observer, not the poller
}

func newEvent(t *apcore.TaskInfo, local bool) event {
	e := event{
		id: t.TaskID, module: t.ModuleID, status: t.Status,
		submitted: t.SubmittedAt, started: t.StartedAt, completed: t.CompletedAt,
		retries: t.RetryCount, maxRetries: t.MaxRetries, priority: t.Priority,
		progress: t.Progress, message: t.ProgressMessage, code: t.ErrorCode,
		local: local,
	}
	if t.RunAt != nil {
		e.runAt = *t.RunAt
	}
	return e
}

// numShards is how many shards the observer's buffer has.
const numShards = 8

// shard is a part of the observer's buffer.
type shard struct {
	mu       sync.Mutex
	buf      []event // events since the last flush, in order
	spare    []event // the previous batch's array, for the next one
	overflow bool    // events were left out of buf since the last flush
	// full is overflow, read without the lock: once the shard is full, an
	// observer call costs one atomic load until the next flush.
	full atomic.Bool
	_    [64]byte // its own cache lines
}

// shardOf returns the shard of the task id.
func (h *hub) shardOf(id string) *shard {
	if id == "" {
		return &h.shards[0]
	}
	return &h.shards[id[len(id)-1]%numShards]
}

// take swaps the shard's buffer for its spare array and returns the batch.
func (s *shard) take() (batch []event, overflow bool) {
	s.mu.Lock()
	batch, overflow = s.buf, s.overflow
	s.buf, s.spare, s.overflow = s.spare[:0], batch, false
	s.full.Store(false)
	s.mu.Unlock()
	return batch, overflow
}

// client is one connected event stream.
type client struct {
	mu      sync.Mutex
	queue   [][]byte // encoded batches, shared with the other clients
	bytes   int
	ready   chan struct{} // a batch was queued
	dropped chan struct{} // closed when it fell too far behind
}

// push queues p unless the client has limit bytes queued already; false
// means the client is to be dropped. A single batch larger than limit is
// queued when nothing else is.
func (c *client) push(p []byte, limit int) bool {
	c.mu.Lock()
	if c.bytes > 0 && c.bytes+len(p) > limit {
		c.mu.Unlock()
		return false
	}
	c.queue = append(c.queue, p)
	c.bytes += len(p)
	c.mu.Unlock()
	select {
	case c.ready <- struct{}{}:
	default:
	}
	return true
}

// take returns what is queued and empties the queue.
func (c *client) take() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queue
	c.queue, c.bytes = nil, 0
	return q
}

func newHub(mgr *apcore.TaskManager, cfg config) *hub {
	return &hub{mgr: mgr, cfg: cfg, clients: map[*client]struct{}{}, changed: make(chan struct{}), wake: make(chan struct{}, 1)}
}

// changedLocked tells the waiters on state's channel that the state
// changed. h.mu is held.
func (h *hub) changedLocked() {
	close(h.changed)
	h.changed = make(chan struct{})
}

// state reports how many streams are registered, how many handlers have
// not returned, whether the hub is subscribed, and a channel closed at
// the next change of these.
func (h *hub) state() (clients, serving int, running bool, changed <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients), h.serving, h.running, h.changed
}

func (h *hub) setServing(d int) {
	h.mu.Lock()
	h.serving += d
	h.changedLocked()
	h.mu.Unlock()
}

// add registers c. For the first client it subscribes to the manager,
// reads the active records once (so that the poller reports what changes
// from now on) and starts the poller and the flusher.
func (h *hub) add(c *client) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	h.mu.Lock()
	running := h.running
	h.mu.Unlock()
	if !running {
		for i := range h.shards {
			batch, _ := h.shards[i].take()
			clear(batch)
		}
		h.woken.Store(false)
		select {
		case <-h.wake:
		default:
		}
		h.stateMu.Lock()
		h.known, h.ended = map[string]seen{}, map[string]time.Time{}
		h.stateMu.Unlock()
		unsub, err := h.mgr.Subscribe(h.observe)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		h.pollOnce(ctx, true)
		h.unsub, h.stop = unsub, cancel
		h.wg.Add(2)
		go h.poll(ctx)
		go h.flush(ctx)
	}
	h.mu.Lock()
	h.running = true
	h.clients[c] = struct{}{}
	h.changedLocked()
	h.mu.Unlock()
	return nil
}

// remove unregisters c (if it is still registered), then stops the hub if
// no client is left.
func (h *hub) remove(c *client) {
	h.mu.Lock()
	delete(h.clients, c)
	h.changedLocked()
	h.mu.Unlock()
	h.stopIfIdle()
}

// stopIfIdle stops the subscription, the poller and the flusher when no
// client is registered, and waits for them to return.
func (h *hub) stopIfIdle() {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	h.mu.Lock()
	idle := h.running && len(h.clients) == 0
	h.mu.Unlock()
	if !idle {
		return
	}
	h.unsub()
	h.stop()
	h.wg.Wait()
	h.unsub, h.stop = nil, nil
	h.mu.Lock()
	h.running = false
	h.changedLocked()
	h.mu.Unlock()
}

// observe is the manager's observer: this manager's transitions and
// progress reports. It only copies a few fields into the buffer.
func (h *hub) observe(info apcore.TaskInfo) {
	h.enqueue(&info, true)
}

// report queues an event of info while any client listens (the cancel
// endpoint's report of a task that may run on another replica).
func (h *hub) report(info apcore.TaskInfo) {
	h.mu.Lock()
	running := h.running
	h.mu.Unlock()
	if running {
		h.enqueue(&info, true)
	}
}

// enqueue adds an event of t to its shard of the buffer (or notes that it
// left it out, when the shard is full) and wakes the flusher once per
// batch. It never blocks but on the shard's lock, which is held only to
// append or to swap the buffer.
func (h *hub) enqueue(t *apcore.TaskInfo, local bool) {
	s := h.shardOf(t.TaskID)
	if s.full.Load() {
		return // the batch becomes a resync event anyway
	}
	s.mu.Lock()
	if len(s.buf) < h.cfg.maxBatch/numShards {
		s.buf = append(s.buf, newEvent(t, local))
	} else {
		s.overflow = true
		s.full.Store(true)
	}
	s.mu.Unlock()
	if !h.woken.Load() && h.woken.CompareAndSwap(false, true) {
		select {
		case h.wake <- struct{}{}:
		default:
		}
	}
}

// flush is the flusher: at most every flushInterval it takes the buffer,
// encodes it and hands it to the clients.
func (h *hub) flush(ctx context.Context) {
	defer h.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var last time.Time
	latest := map[string]int{}
	var out []byte
	var batches [numShards][]event
	var over [numShards]bool
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		if d := h.cfg.flushInterval - time.Since(last); d > 0 {
			timer.Reset(d)
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
		}
		last = time.Now()
		h.woken.Store(false)
		overflow := false
		for i := range h.shards {
			batches[i], over[i] = h.shards[i].take()
			overflow = overflow || over[i]
		}
		out = out[:0]
		if overflow {
			h.busyAt.Store(last.UnixNano())
			out = append(out, "event: resync\ndata: {}\n\n"...)
		}
		for i := range batches {
			out = h.encode(out, batches[i], overflow, latest, last)
			clear(batches[i]) // drop the strings it holds
		}
		if len(out) > 0 {
			h.deliver(append([]byte(nil), out...))
		}
	}
}

// encode appends the stream's text for a shard's batch to out: the latest
// event of each task, in the order of those events; nothing when the
// batch overflowed (the resync event replaces it). It also notes what the
// poller must not report again.
func (h *hub) encode(out []byte, batch []event, overflow bool, latest map[string]int, now time.Time) []byte {
	h.stateMu.Lock()
	defer h.stateMu.Unlock()
	if overflow {
		// Only the ends matter now: the clients reload, and the poller
		// must not bring an ended task back.
		for i := range batch {
			if e := &batch[i]; e.status.IsTerminal() {
				h.noteEnded(e.id, now)
			}
		}
		return out
	}
	for i := range batch {
		latest[batch[i].id] = i
	}
	for i := range batch {
		e := &batch[i]
		if latest[e.id] != i {
			continue
		}
		if e.status.IsTerminal() {
			if !h.noteEnded(e.id, now) {
				continue // reported already (by the cancel endpoint, say)
			}
		} else if e.local && h.known != nil {
			h.known[e.id] = seen{key: recordKey{e.status, e.retries, e.progress, e.started.UnixNano(), e.message}, localAt: now}
		}
		out = appendEvent(out, e)
	}
	clear(latest)
	return out
}

// noteEnded notes that the task ended, and reports whether that is news.
// h.stateMu is held.
func (h *hub) noteEnded(id string, now time.Time) bool {
	if h.known == nil {
		return true
	}
	if _, dup := h.ended[id]; dup {
		return false
	}
	delete(h.known, id)
	if len(h.ended) < maxEnded {
		h.ended[id] = now
	}
	return true
}

// deliver queues p for every client without blocking; a client with too
// much queued already is dropped (its browser reconnects and reloads).
func (h *hub) deliver(p []byte) {
	h.mu.Lock()
	dropped := false
	for c := range h.clients {
		if !c.push(p, h.cfg.clientQueueBytes) {
			delete(h.clients, c)
			close(c.dropped)
			dropped = true
		}
	}
	idle := dropped && len(h.clients) == 0
	if dropped {
		h.changedLocked()
	}
	h.mu.Unlock()
	if idle {
		// Stopping waits for this goroutine: leave it to another. A
		// dropped client's handler may be blocked in a write until its
		// deadline; the manager need not pay for the events meanwhile.
		go h.stopIfIdle()
	}
}

// poll reads the store's active records every pollInterval and reports
// what changed since the last read: the transitions of tasks that other
// replicas run.
func (h *hub) poll(ctx context.Context) {
	defer h.wg.Done()
	tick := time.NewTicker(h.cfg.pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		h.pollOnce(ctx, false)
	}
}

// pollOnce reads the active records once and reports what changed; quiet,
// it only learns what is there. While the stream is busy (batches overflow
// and the clients reload instead), it is quiet, and forgets the tasks that
// left the lists instead of reading each one's record.
func (h *hub) pollOnce(ctx context.Context, quiet bool) {
	busy := time.Since(time.Unix(0, h.busyAt.Load())) < 2*h.cfg.pollInterval
	ctx, cancel := context.WithTimeout(ctx, pollTimeout)
	defer cancel()
	pending, running, over, err := h.readActive(ctx)
	if err != nil {
		return
	}
	// Above the cap nothing is read: the tasks known are forgotten as
	// while busy, and the pages' refresh shows other replicas' tasks.
	busy = busy || over
	quiet = quiet || busy
	now := time.Now()
	var emit []apcore.TaskInfo
	var gone []string
	h.stateMu.Lock()
	present := make(map[string]struct{}, len(pending)+len(running))
	for _, list := range [][]apcore.TaskInfo{pending, running} {
		for i := range list {
			t := &list[i]
			present[t.TaskID] = struct{}{}
			if _, ok := h.ended[t.TaskID]; ok {
				continue
			}
			prev, ok := h.known[t.TaskID]
			if ok && now.Sub(prev.localAt) < localQuiet {
				continue
			}
			if k := keyOf(t); !ok || prev.key != k {
				h.known[t.TaskID] = seen{key: k, localAt: prev.localAt}
				if !quiet {
					emit = append(emit, *t)
				}
			}
		}
	}
	for id, s := range h.known {
		if _, ok := present[id]; !ok && now.Sub(s.localAt) >= localQuiet {
			if busy {
				delete(h.known, id)
			} else {
				gone = append(gone, id)
			}
		}
	}
	for id, at := range h.ended {
		if now.Sub(at) > endedMemory {
			delete(h.ended, id)
		}
	}
	h.stateMu.Unlock()

	// A task that left the active lists ended (or moved between the two
	// Lists): read its record.
	for _, id := range gone {
		t, err := h.mgr.Status(ctx, id)
		h.stateMu.Lock()
		switch {
		case err == nil && t.Status.IsTerminal():
			delete(h.known, id)
			emit = append(emit, t)
		case err == nil:
			if k := keyOf(&t); h.known[id].key != k {
				h.known[id] = seen{key: k}
				emit = append(emit, t)
			}
		case apcore.CodeOf(err) == apcore.CodeTaskNotFound:
			delete(h.known, id)
		}
		h.stateMu.Unlock()
	}
	for i := range emit {
		h.enqueue(&emit[i], false)
	}
}

// maxPolled is the most active records a poll reads (config.maxPolled):
// while more are active, the poller reads none (a count tells it) and
// reports nothing of other replicas' tasks; the pages refresh every few
// seconds anyway.
const maxPolled = 5000

// pollTimeout bounds one poll's store calls.
const pollTimeout = 5 * time.Second

// readActive returns the pending and the running records, or over when
// more than maxPolled are active. With a store that counts (apcore.Counter)
// it counts them first; with a store that pages (apcore.Pager) it reads
// them a page at a time, so that a poll costs the active records, not the
// records the store keeps; a store without Pager is listed by state.
func (h *hub) readActive(ctx context.Context) (pending, running []apcore.TaskInfo, over bool, err error) {
	store := h.mgr.Store()
	if c, ok := store.(apcore.Counter); ok {
		n, err := c.Count(ctx, apcore.StatusPending, apcore.StatusRunning)
		if err != nil {
			return nil, nil, false, err
		}
		if n > h.cfg.maxPolled {
			return nil, nil, true, nil
		}
	}
	_, paged := store.(apcore.Pager)
	read := func(st apcore.TaskStatus, room int) ([]apcore.TaskInfo, error) {
		if !paged {
			return h.mgr.List(ctx, st)
		}
		var out []apcore.TaskInfo
		after := ""
		for {
			page, err := h.mgr.ListPage(ctx, apcore.ListOptions{Status: st, After: after, Limit: apcore.MaxPageLimit})
			if err != nil {
				return nil, err
			}
			out = append(out, page.Tasks...)
			if page.Next == "" || len(out) > room {
				return out, nil
			}
			after = page.Next
		}
	}
	if pending, err = read(apcore.StatusPending, h.cfg.maxPolled); err != nil {
		return nil, nil, false, err
	}
	if running, err = read(apcore.StatusRunning, h.cfg.maxPolled-len(pending)); err != nil {
		return nil, nil, false, err
	}
	if len(pending)+len(running) > h.cfg.maxPolled {
		return nil, nil, true, nil
	}
	return pending, running, false, nil
}

// serve is GET /api/events.
func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	h.setServing(1)
	defer h.setServing(-1)
	rc := http.NewResponseController(w)
	c := &client{ready: make(chan struct{}, 1), dropped: make(chan struct{})}
	if err := h.add(c); err != nil {
		writeStoreError(w, err)
		return
	}
	defer h.remove(c)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	// Every write has a deadline: a client that stops reading is dropped
	// rather than holding this handler (and the hub) for ever. It also
	// replaces a server's WriteTimeout, which must not cut the stream.
	write := func(parts ...[]byte) bool {
		err := rc.SetWriteDeadline(time.Now().Add(h.cfg.writeTimeout))
		if err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		for _, p := range parts {
			if _, err := w.Write(p); err != nil {
				return false
			}
		}
		return rc.Flush() == nil
	}
	w.WriteHeader(http.StatusOK)
	if !write([]byte("retry: 2000\n: connected\n\n")) {
		return
	}
	heartbeat := time.NewTicker(h.cfg.heartbeat)
	defer heartbeat.Stop()
	ping := []byte(": ping\n\n")
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.dropped:
			return
		case <-heartbeat.C:
			if !write(ping) {
				return
			}
		case <-c.ready:
			if q := c.take(); len(q) > 0 && !write(q...) {
				return
			}
		}
	}
}

// appendEvent appends e as one server-sent event whose data is a record in
// the wire format without result, error and unique key: run_at and
// priority are there when set, as TaskInfo.MarshalJSON writes them.
func appendEvent(b []byte, e *event) []byte {
	b = append(b, `data: {"task_id":`...)
	b = appendString(b, e.id)
	b = append(b, `,"module_id":`...)
	b = appendString(b, e.module)
	b = append(b, `,"status":`...)
	b = appendString(b, string(e.status))
	b = append(b, `,"submitted_at":`...)
	b = appendTime(b, e.submitted, false)
	b = append(b, `,"started_at":`...)
	b = appendTime(b, e.started, true)
	b = append(b, `,"completed_at":`...)
	b = appendTime(b, e.completed, true)
	b = append(b, `,"retry_count":`...)
	b = strconv.AppendInt(b, int64(e.retries), 10)
	b = append(b, `,"max_retries":`...)
	b = strconv.AppendInt(b, int64(e.maxRetries), 10)
	if e.code != "" {
		b = append(b, `,"error_code":`...)
		b = appendString(b, string(e.code))
	}
	if e.progress != 0 {
		b = append(b, `,"progress":`...)
		b = appendFloat(b, e.progress)
	}
	if e.message != "" {
		msg := e.message
		if len(msg) > maxMessage {
			cut := maxMessage
			for cut > 0 && !utf8.RuneStart(msg[cut]) {
				cut--
			}
			msg = msg[:cut] + "…"
		}
		b = append(b, `,"progress_message":`...)
		b = appendString(b, msg)
	}
	if !e.runAt.IsZero() {
		b = append(b, `,"run_at":`...)
		b = appendTime(b, e.runAt, false)
	}
	if e.priority != 0 {
		b = append(b, `,"priority":`...)
		b = strconv.AppendInt(b, int64(e.priority), 10)
	}
	return append(b, "}\n\n"...)
}

// appendTime appends t as Unix seconds to the microsecond, as the wire
// format has it; the zero time is null when nullable, 0 otherwise.
func appendTime(b []byte, t time.Time, nullable bool) []byte {
	if t.IsZero() {
		if nullable {
			return append(b, "null"...)
		}
		return append(b, '0')
	}
	return appendFloat(b, float64(t.UnixMicro())/1e6)
}

// appendFloat appends f as a JSON number; JSON has none for NaN or the
// infinities, which become 0.
func appendFloat(b []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, '0')
	}
	return strconv.AppendFloat(b, f, 'f', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD, and <, >
// and & escaped as encoding/json does.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

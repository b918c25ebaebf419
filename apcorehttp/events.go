package apcorehttp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/apcore-go/apcore"
)

// localQuiet is how long after this manager's own event about a task the
// poller leaves that task alone: the store may still hold an older
// progress value (writes are coalesced for a quarter of a second), and the
// observer already reported it.
const localQuiet = 3 * time.Second

// endedMemory is how long the poller remembers that a task ended, so that
// a List taken before the end does not bring it back.
const endedMemory = 10 * time.Second

// hub fans the events out to the connected clients. While any client is
// connected it subscribes to the manager and polls the store's active
// records; with none, it runs no goroutine at all.
type hub struct {
	mgr *apcore.TaskManager
	cfg config

	lifeMu  sync.Mutex         // serialises starting and stopping
	running bool               // subscribed and polling
	stop    context.CancelFunc // ends the poller
	done    chan struct{}      // closed when the poller has returned
	unsub   func()

	mu      sync.Mutex // guards clients
	clients map[*client]struct{}

	stateMu sync.Mutex
	known   map[string]seen      // active tasks as last reported
	ended   map[string]time.Time // tasks that ended lately
}

// seen is what the hub last reported of an active task.
type seen struct {
	key     string
	localAt time.Time // when this manager's observer last reported it
}

// client is one connected event stream.
type client struct {
	ch      chan []byte
	dropped chan struct{} // closed when it fell too far behind
}

func newHub(mgr *apcore.TaskManager, cfg config) *hub {
	return &hub{mgr: mgr, cfg: cfg, clients: map[*client]struct{}{}}
}

// active reports how many streams are connected and whether the hub is
// subscribed and polling.
func (h *hub) active() (clients int, running bool) {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.clients), h.running
}

// add registers c. For the first client it subscribes to the manager,
// reads the active records once (so that the poller reports what changes
// from now on) and starts the poller.
func (h *hub) add(c *client) error {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	if !h.running {
		unsub, err := h.mgr.Subscribe(h.observe)
		if err != nil {
			return err
		}
		h.stateMu.Lock()
		h.known, h.ended = map[string]seen{}, map[string]time.Time{}
		h.stateMu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		h.pollOnce(ctx, true)
		h.unsub, h.stop, h.done, h.running = unsub, cancel, make(chan struct{}), true
		go h.poll(ctx, h.done)
	}
	h.mu.Lock()
	h.clients[c] = struct{}{}
	h.mu.Unlock()
	return nil
}

// remove unregisters c; after the last client it stops the poller and the
// subscription and waits for the poller to return.
func (h *hub) remove(c *client) {
	h.lifeMu.Lock()
	defer h.lifeMu.Unlock()
	h.mu.Lock()
	delete(h.clients, c)
	n := len(h.clients)
	h.mu.Unlock()
	if n > 0 || !h.running {
		return
	}
	h.unsub()
	h.stop()
	<-h.done
	h.unsub, h.stop, h.done, h.running = nil, nil, nil, false
}

// broadcast hands data to every client without blocking; a client whose
// buffer is full is dropped (its browser reconnects and reloads).
func (h *hub) broadcast(data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.clients {
		select {
		case c.ch <- data:
		default:
			delete(h.clients, c)
			close(c.dropped)
		}
	}
}

// keyOf is what makes two reports of an active task differ.
func keyOf(t *apcore.TaskInfo) string {
	return fmt.Sprintf("%s|%d|%v|%d|%q", t.Status, t.RetryCount, t.Progress, t.StartedAt.UnixNano(), t.ProgressMessage)
}

// observe is the manager's observer: this manager's transitions and
// progress reports, at once. The cancel endpoint calls it too, with the
// record it cancelled: a task another replica runs ends without an
// observer call here.
func (h *hub) observe(info apcore.TaskInfo) {
	data, err := json.Marshal(info)
	if err != nil {
		return
	}
	now := time.Now()
	h.stateMu.Lock()
	if h.known != nil {
		if info.Status.IsTerminal() {
			if _, dup := h.ended[info.TaskID]; dup {
				h.stateMu.Unlock()
				return // reported already (by the cancel endpoint, say)
			}
			delete(h.known, info.TaskID)
			h.ended[info.TaskID] = now
		} else {
			h.known[info.TaskID] = seen{key: keyOf(&info), localAt: now}
		}
	}
	h.stateMu.Unlock()
	h.broadcast(data)
}

// poll reads the store's active records every pollInterval and reports
// what changed since the last read: the transitions of tasks that other
// replicas run.
func (h *hub) poll(ctx context.Context, done chan struct{}) {
	defer close(done)
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
// it only learns what is there.
func (h *hub) pollOnce(ctx context.Context, quiet bool) {
	pending, err := h.mgr.List(ctx, apcore.StatusPending)
	if err != nil {
		return
	}
	running, err := h.mgr.List(ctx, apcore.StatusRunning)
	if err != nil {
		return
	}
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
			gone = append(gone, id)
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
			h.ended[id] = now
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
		if data, err := json.Marshal(emit[i]); err == nil {
			h.broadcast(data)
		}
	}
}

// serve is GET /api/events.
func (h *hub) serve(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	c := &client{ch: make(chan []byte, h.cfg.clientBuffer), dropped: make(chan struct{})}
	if err := h.add(c); err != nil {
		writeStoreError(w, err)
		return
	}
	defer h.remove(c)
	// The stream lasts as long as the client stays: a server's
	// WriteTimeout must not cut it.
	_ = rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if _, err := fmt.Fprint(w, "retry: 2000\n: connected\n\n"); err != nil {
		return
	}
	if rc.Flush() != nil {
		return
	}
	heartbeat := time.NewTicker(h.cfg.heartbeat)
	defer heartbeat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-c.dropped:
			return
		case <-heartbeat.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil {
				return
			}
		case data := <-c.ch:
			if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
				return
			}
			// Write what else is queued before flushing once.
			for more := true; more; {
				select {
				case data = <-c.ch:
					if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
						return
					}
				default:
					more = false
				}
			}
		}
		if rc.Flush() != nil {
			return
		}
	}
}

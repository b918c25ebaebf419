package apcorehttp

import (
	"net/http"
	"time"
)

// HubState reports how many event streams h serves and whether it is
// subscribed and polling, for the tests.
func HubState(h http.Handler) (clients int, running bool) {
	c, _, r, _ := h.(*handler).hub.state()
	return c, r
}

// WaitHub waits until cond holds for h's event hub (registered clients,
// handlers of the stream that have not returned, subscribed), or timeout
// passes; it reports whether cond held.
func WaitHub(h http.Handler, timeout time.Duration, cond func(clients, serving int, running bool) bool) bool {
	hub := h.(*handler).hub
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c, s, r, changed := hub.state()
		if cond(c, s, r) {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// EventTimings sets the event stream's write timeout, its flush interval
// and the bytes a client may have queued, for the tests.
func EventTimings(writeTimeout, flushEvery time.Duration, queueBytes int) Option {
	return func(c *config) {
		c.writeTimeout, c.flushInterval, c.clientQueueBytes = writeTimeout, flushEvery, queueBytes
	}
}

// PollCap sets the most active records the event stream's poll reads, for
// the tests.
func PollCap(n int) Option { return func(c *config) { c.maxPolled = n } }

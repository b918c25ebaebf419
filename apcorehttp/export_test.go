package apcorehttp

import "net/http"

// HubState reports how many event streams h serves and whether it is
// subscribed and polling, for the tests.
func HubState(h http.Handler) (clients int, running bool) {
	return h.(*handler).hub.active()
}

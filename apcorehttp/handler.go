// Package apcorehttp serves a live web page of an apcore.TaskManager's
// tasks and a small JSON API: counts per state, a filtered and paged table,
// each task's record, progress bars, cancel buttons, a chart of the last
// minutes, and server-sent events so that the page follows transitions
// without reloading. It shows what the manager's store holds, so replicas
// sharing a store see each other's tasks.
//
// The handler adds no authentication: mount it behind your own.
//
//	h, err := apcorehttp.NewHandler(mgr)
//	if err != nil { ... }
//	http.Handle("/tasks/", requireAdmin(http.StripPrefix("/tasks", h)))
package apcorehttp

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
)

//go:embed static
var staticFiles embed.FS

// config collects the Options.
type config struct {
	readOnly     bool
	trusted      []string
	cacheTTL     time.Duration // the counts'
	chartTTL     time.Duration
	pollInterval time.Duration
	heartbeat    time.Duration
	chartWindow  time.Duration
	chartBucket  time.Duration

	// The event stream's bounds (see events.go).
	writeTimeout     time.Duration // a write to a client that takes longer drops it
	flushInterval    time.Duration // the least time between two batches
	maxBatch         int           // events per batch; more make a resync event instead
	clientQueueBytes int           // bytes queued for a client; more drop it
	maxPolled        int           // active records a poll reads at most
}

// Option configures NewHandler.
type Option func(*config)

// ReadOnly removes the cancel endpoint (POST /api/tasks/{id}/cancel answers
// 405) and the page's cancel buttons.
func ReadOnly() Option { return func(c *config) { c.readOnly = true } }

// TrustedOrigin allows cancel requests from another origin (scheme://host
// or scheme://host:port), such as the public address of a reverse proxy
// that rewrites the Host header. By default only same-origin requests may
// cancel.
func TrustedOrigin(origin string) Option {
	return func(c *config) { c.trusted = append(c.trusted, origin) }
}

// handler serves the page, the API and the events.
type handler struct {
	mgr   *apcore.TaskManager
	cfg   config
	mux   *http.ServeMux
	cache *summaryCache
	hub   *hub
	page  []byte
}

// NewHandler returns an http.Handler that serves a live web page of the
// manager's tasks and a JSON API, to be mounted under any prefix with
// http.StripPrefix. It adds no authentication: mount it behind your own.
//
// Routes, relative to the mount point:
//
//	GET  /                        the page (HTML, CSS, script: embedded)
//	GET  /api/tasks               {"tasks": [record, ...]} (see below)
//	GET  /api/tasks/{id}          the record, or 404 TASK_NOT_FOUND
//	POST /api/tasks/{id}/cancel   {"cancelled": bool} (not under ReadOnly)
//	GET  /api/summary             counts per state, modules, chart series
//	GET  /api/events              text/event-stream of records' changes
//
// GET /api/tasks answers one page: {"tasks": [...], "next": cursor}. It
// takes status (one state, or "scheduled": the pending records whose
// run_at is in the future), order ("asc", the default: insertion order; or
// "desc": newest first), limit (1-1000, default 100), after (the "next" of
// the previous answer; also sent as a Link header with rel="next"), module
// (one module id), unique_key (one key, matched exactly) and offset
// (0-10,000; instead of after). "next" is absent on the last page. A
// request costs its page, whatever the store holds (on a store with
// apcore.Pager, as every store of this repository has), and counts nothing
// (GET /api/summary has the counts). The store cannot filter by module, by
// run_at or by unique key, so with module, status=scheduled or unique_key
// the handler reads store pages (of the pending records for scheduled) and
// keeps the matching records, reading about 10,000 records at most per
// request: the answer then may hold fewer than limit records with a
// "next", and says how many it read ("scanned"). An offset costs the
// records it skips. A bad parameter or a cursor that neither this handler
// nor the store made is 400 GENERAL_INVALID_INPUT.
//
// GET /api/summary answers {"generated_at", "counts", "modules",
// "chart"}: the records per state and in all ("total"), one Count per
// state (apcore.Counter) shared for a second, or for twenty times as long
// as counting took when that is longer; the module ids of the records the
// handler has read; and the chart of the last five minutes ("end",
// "bucket_seconds", "finished", "wait_avg", "wait_max"), made from the
// newest records, at most 5,000 of them ("records"; "partial" and "from",
// the oldest submission read, when that cut the window short), shared for
// two seconds. It never lists every record.
//
// POST /api/tasks/{id}/cancel is refused (403) unless the request's
// Content-Type is application/json or it carries the header
// "X-Apcore-Request: 1", and it is cross-origin according to
// Sec-Fetch-Site or Origin: a plain HTML form on another site can send
// neither.
//
// GET /api/events sends an event for every transition and progress report
// of the manager's own tasks as it happens, and, while any client listens,
// reads the store's pending and running records every 0.8 s to report
// the transitions of other replicas' tasks too: a change there shows within
// about a second, except that a task another replica starts and ends
// between two reads is seen only by the next list (the page refreshes its
// list every few seconds). The read costs the active records (it counts
// them first, and reads them a page at a time); while more than 5,000 are
// active it reads none, and other replicas' tasks show with the page's
// refresh instead. Each event's data is a record in the wire
// format without its result, error and unique key (GET /api/tasks/{id} has
// them), and with the progress message cut to 1 KiB. Events are sent in batches at
// most every 50 ms, with only the latest event of each task in a batch;
// when more than 2,048 transitions come between two batches, the batch is
// one event named "resync" instead, telling the client to reload what it
// shows. A client that falls behind (4 MiB queued for it, or a write that
// takes 10 s) is dropped; an EventSource reconnects.
//
// Records are TaskInfo's JSON (its MarshalJSON), run_at, unique_key and
// priority included when set.
//
// A record whose result JSON cannot encode (NaN or an infinity, which the
// memory store keeps) is sent with those numbers as the strings "NaN",
// "+Inf" and "-Inf"; a result that still does not encode is sent as null,
// with a "result_error" field saying why.
func NewHandler(mgr *apcore.TaskManager, opts ...Option) (http.Handler, error) {
	if mgr == nil {
		return nil, &apcore.Error{Code: apcore.CodeInvalidInput, Message: "apcorehttp.NewHandler: the manager is nil"}
	}
	cfg := config{
		cacheTTL:     time.Second,
		chartTTL:     2 * time.Second,
		pollInterval: 800 * time.Millisecond,
		heartbeat:    15 * time.Second,
		chartWindow:  5 * time.Minute,
		chartBucket:  5 * time.Second,

		writeTimeout:     10 * time.Second,
		flushInterval:    50 * time.Millisecond,
		maxBatch:         2048,
		clientQueueBytes: 4 << 20,
		maxPolled:        maxPolled,
	}
	for _, o := range opts {
		if o != nil {
			o(&cfg)
		}
	}
	h := &handler{mgr: mgr, cfg: cfg, mux: http.NewServeMux()}
	h.cache = newSummaryCache(mgr, cfg)
	h.hub = newHub(mgr, cfg)

	page, err := staticFiles.ReadFile("static/index.html")
	if err != nil {
		return nil, err
	}
	mode := "rw"
	if cfg.readOnly {
		mode = "ro"
	}
	h.page = []byte(strings.Replace(string(page), `data-mode="rw"`, `data-mode="`+mode+`"`, 1))
	sub, err := fs.Sub(staticFiles, "static")
	if err != nil {
		return nil, err
	}
	files := http.FileServerFS(sub)

	h.mux.HandleFunc("GET /{$}", h.serveIndex)
	h.mux.Handle("GET /app.js", files)
	h.mux.Handle("GET /app.css", files)
	h.mux.HandleFunc("GET /api/tasks", h.listTasks)
	h.mux.HandleFunc("GET /api/tasks/{id}", h.getTask)
	h.mux.HandleFunc("GET /api/summary", h.summary)
	h.mux.HandleFunc("GET /api/events", h.hub.serve)
	if !cfg.readOnly {
		cop := http.NewCrossOriginProtection()
		for _, o := range cfg.trusted {
			if err := cop.AddTrustedOrigin(o); err != nil {
				return nil, &apcore.Error{Code: apcore.CodeInvalidInput, Message: "apcorehttp.TrustedOrigin: " + err.Error(), Cause: err}
			}
		}
		cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeError(w, http.StatusForbidden, "FORBIDDEN", "cross-origin request refused")
		}))
		h.mux.Handle("POST /api/tasks/{id}/cancel", cop.Handler(http.HandlerFunc(h.cancel)))
	}
	return h, nil
}

// ServeHTTP serves the routes listed at NewHandler.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

func (h *handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Referrer-Policy", "no-referrer")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(h.page)
}

type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]apiError{"error": {Code: code, Message: message}})
}

// writeStoreError answers for an error of the manager.
func writeStoreError(w http.ResponseWriter, err error) {
	code := apcore.CodeOf(err)
	status := http.StatusInternalServerError
	switch code {
	case apcore.CodeTaskNotFound:
		status = http.StatusNotFound
	case apcore.CodeInvalidInput:
		status = http.StatusBadRequest
	case apcore.CodeTaskStoreUnavailable, apcore.CodeTaskManagerClosed:
		status = http.StatusServiceUnavailable
	case "":
		code = apcore.CodeInternalError
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			status = http.StatusServiceUnavailable
		}
	}
	writeError(w, status, string(code), err.Error())
}

func (h *handler) getTask(w http.ResponseWriter, r *http.Request) {
	info, err := h.mgr.Status(r.Context(), r.PathValue("id"))
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeBody(w, http.StatusOK, append(appendRecord(nil, &info), '\n'))
}

func (h *handler) summary(w http.ResponseWriter, r *http.Request) {
	sum, err := h.cache.get(r.Context())
	if err != nil {
		writeStoreError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, sum)
}

// allowedCancel tells whether a cancel request could not have come from a
// plain HTML form: those can send neither a JSON content type nor a custom
// header.
func allowedCancel(r *http.Request) bool {
	if r.Header.Get("X-Apcore-Request") != "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == "application/json"
}

func (h *handler) cancel(w http.ResponseWriter, r *http.Request) {
	if !allowedCancel(r) {
		writeError(w, http.StatusForbidden, "FORBIDDEN", `cancel needs "Content-Type: application/json" or the header "X-Apcore-Request: 1"`)
		return
	}
	id := r.PathValue("id")
	ok, err := h.mgr.Cancel(r.Context(), id)
	if err == nil && !ok {
		// Cancel reports an unknown id as not cancelled: answer 404, as
		// GET /api/tasks/{id} does.
		_, err = h.mgr.Status(r.Context(), id)
	}
	if err != nil {
		writeStoreError(w, err)
		return
	}
	if ok {
		// Tell the event streams now, also when another replica runs the
		// task (then this manager's observers are not called).
		if info, err := h.mgr.Status(r.Context(), id); err == nil && info.Status.IsTerminal() {
			h.hub.report(info)
		}
	}
	writeJSON(w, http.StatusOK, map[string]bool{"cancelled": ok})
}

package sqlstore

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/apcore-go/apcore"
)

// infoColumns are a record's columns, in the order every query reads and
// writes them; sharedColumns are what a SharedStore keeps beside it.
var (
	infoColumns = []string{"task_id", "module_id", "status", "submitted_at", "started_at", "completed_at",
		"result", "error", "retry_count", "max_retries", "error_code", "progress", "progress_message",
		"run_at", "unique_key", "priority"}
	// due is 0 while a pending record waits for its not_before, until a
	// Claim promotes it (see promote), and 1 otherwise.
	sharedColumns = []string{"owner", "resumable", "inputs", "spec", "not_before", "due"}
)

// pgTypes are the PostgreSQL types of the columns, by name, for the casts
// that INSERT ... SELECT needs to type its parameters.
var pgTypes = map[string]string{
	"task_id": "text", "module_id": "text", "status": "text", "submitted_at": "bigint", "started_at": "bigint",
	"completed_at": "bigint", "result": "text", "error": "text", "retry_count": "integer", "max_retries": "integer",
	"error_code": "text", "progress": "double precision", "progress_message": "text",
	"owner": "text", "resumable": "integer", "inputs": "text", "spec": "text", "not_before": "bigint",
	"run_at": "bigint", "unique_key": "text", "priority": "integer", "due": "integer",
}

// micros is t as Unix microseconds, or NULL for the zero time.
func micros(t time.Time) sql.NullInt64 {
	if t.IsZero() {
		return sql.NullInt64{}
	}
	return sql.NullInt64{Int64: t.UnixMicro(), Valid: true}
}

func fromMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return time.UnixMicro(v.Int64).UTC()
}

// clean returns s as a text column keeps it on both dialects: valid UTF-8
// without NUL bytes (PostgreSQL refuses both in text). Each invalid byte
// sequence and each NUL becomes U+FFFD, the replacement character that
// encoding/json uses for invalid UTF-8 too. Text that needs no change is
// returned as it is, without allocating.
func clean(s string) string {
	if utf8.ValidString(s) && strings.IndexByte(s, 0) < 0 {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// storableID reports whether the dialect can hold id as a task id: on
// PostgreSQL, text without NUL bytes and in valid UTF-8. A record with any
// other id cannot exist there, so looking it up finds nothing.
func (s *Store) storableID(id string) bool {
	return s.dialect != PostgreSQL || (utf8.ValidString(id) && strings.IndexByte(id, 0) < 0)
}

func nullText(s string) sql.NullString {
	if s == "" {
		return sql.NullString{}
	}
	return sql.NullString{String: clean(s), Valid: true}
}

// infoArgs are the values of infoColumns for a record. A result is kept as
// JSON text (a NUL in a string is the escape \u0000 there, which text
// holds); one that does not encode is GENERAL_INVALID_INPUT.
func infoArgs(t *apcore.TaskInfo) ([]any, error) {
	var result sql.NullString
	if t.Result != nil {
		b, err := json.Marshal(t.Result)
		if err != nil {
			return nil, invalid(fmt.Sprintf("sqlstore: task %s: the result does not encode as JSON: %v", t.TaskID, err))
		}
		result = sql.NullString{String: string(b), Valid: true}
	}
	var runAt sql.NullInt64
	if t.RunAt != nil {
		runAt = sql.NullInt64{Int64: t.RunAt.UnixMicro(), Valid: true}
	}
	return []any{t.TaskID, clean(t.ModuleID), string(t.Status), micros(t.SubmittedAt), micros(t.StartedAt), micros(t.CompletedAt),
		result, nullText(t.Error), t.RetryCount, t.MaxRetries, nullText(string(t.ErrorCode)), t.Progress, nullText(t.ProgressMessage),
		runAt, nullText(t.UniqueKey), t.Priority}, nil
}

// dueOf is the due column of a record submitted at submitted that may be
// claimed from notBefore: 1 without one or with one no later than its
// submission (a task due at once, as Submit stores one without a RunAt),
// 0 with a later one, until a Claim at or after it promotes the record
// (see the promote query). Whether the time has passed is not decided
// here, by this process's clock: Claim compares not_before with its own
// Now whether the record is due or not, so a record due at once is only
// spared the promote's write.
func dueOf(notBefore, submitted time.Time) int {
	if notBefore.IsZero() || !notBefore.After(submitted) {
		return 1
	}
	return 0
}

// spec is what a StoredTask keeps in the spec column, as JSON.
type spec struct {
	MaxRetries        int               `json:"max_retries,omitempty"`
	RetryDelay        time.Duration     `json:"retry_delay_ns,omitempty"`
	BackoffMultiplier float64           `json:"backoff_multiplier,omitempty"`
	MaxRetryDelay     time.Duration     `json:"max_retry_delay_ns,omitempty"`
	Timeout           time.Duration     `json:"timeout_ns,omitempty"`
	Trace             map[string]string `json:"trace,omitempty"`
}

// sharedArgs are the values of sharedColumns for a StoredTask.
func sharedArgs(st *apcore.StoredTask) ([]any, error) {
	resumable := 0
	if st.Resumable {
		resumable = 1
	}
	var inputs, sp sql.NullString
	if st.Inputs != nil {
		if !json.Valid(st.Inputs) {
			return nil, invalid(fmt.Sprintf("sqlstore: task %s: the inputs are not JSON", st.Info.TaskID))
		}
		inputs = sql.NullString{String: string(st.Inputs), Valid: true}
	}
	x := spec{MaxRetries: st.Retry.MaxRetries, RetryDelay: st.Retry.RetryDelay, BackoffMultiplier: st.Retry.BackoffMultiplier,
		MaxRetryDelay: st.Retry.MaxRetryDelay, Timeout: st.Timeout, Trace: st.Trace}
	if x.MaxRetries != 0 || x.RetryDelay != 0 || x.BackoffMultiplier != 0 || x.MaxRetryDelay != 0 || x.Timeout != 0 || x.Trace != nil {
		b, err := json.Marshal(x)
		if err != nil {
			return nil, invalid(fmt.Sprintf("sqlstore: task %s: the retry policy does not encode as JSON: %v", st.Info.TaskID, err))
		}
		sp = sql.NullString{String: string(b), Valid: true}
	}
	return []any{clean(st.Owner), resumable, inputs, sp, micros(st.NotBefore), dueOf(st.NotBefore, st.Info.SubmittedAt)}, nil
}

type scanner interface{ Scan(dest ...any) error }

// infoDest receives infoColumns.
type infoDest struct {
	status, module                         string
	sub, start, done                       sql.NullInt64
	result, errText, code, progressMessage sql.NullString
	retryCount, maxRetries                 int64
	progress                               sql.NullFloat64
	runAt                                  sql.NullInt64
	key                                    sql.NullString
	priority                               int64
}

func (d *infoDest) ptrs(t *apcore.TaskInfo) []any {
	return []any{&t.TaskID, &d.module, &d.status, &d.sub, &d.start, &d.done, &d.result, &d.errText,
		&d.retryCount, &d.maxRetries, &d.code, &d.progress, &d.progressMessage, &d.runAt, &d.key, &d.priority}
}

func (d *infoDest) fill(t *apcore.TaskInfo) error {
	t.ModuleID, t.Status = d.module, apcore.TaskStatus(d.status)
	t.SubmittedAt, t.StartedAt, t.CompletedAt = fromMicros(d.sub), fromMicros(d.start), fromMicros(d.done)
	if d.result.Valid {
		if err := json.Unmarshal([]byte(d.result.String), &t.Result); err != nil {
			return fmt.Errorf("task %s: stored result is not JSON: %w", t.TaskID, err)
		}
	}
	t.Error, t.RetryCount, t.MaxRetries = d.errText.String, int(d.retryCount), int(d.maxRetries)
	t.ErrorCode, t.Progress, t.ProgressMessage = apcore.ErrorCode(d.code.String), d.progress.Float64, d.progressMessage.String
	if d.runAt.Valid {
		at := time.UnixMicro(d.runAt.Int64).UTC()
		t.RunAt = &at
	}
	t.UniqueKey, t.Priority = d.key.String, int(d.priority)
	return nil
}

func scan(row scanner) (apcore.TaskInfo, error) {
	var t apcore.TaskInfo
	var d infoDest
	if err := row.Scan(d.ptrs(&t)...); err != nil {
		return t, err
	}
	return t, d.fill(&t)
}

// scanStored reads seq, infoColumns and sharedColumns.
func scanStored(row scanner) (int64, apcore.StoredTask, error) {
	var (
		st         apcore.StoredTask
		d          infoDest
		seq        int64
		resumable  int64
		inputs, sp sql.NullString
		notBefore  sql.NullInt64
		owner      string
		due        int64
		dest       = append([]any{&seq}, d.ptrs(&st.Info)...)
	)
	dest = append(dest, &owner, &resumable, &inputs, &sp, &notBefore, &due)
	if err := row.Scan(dest...); err != nil {
		return 0, st, err
	}
	if err := d.fill(&st.Info); err != nil {
		return 0, st, err
	}
	st.Owner, st.Resumable, st.NotBefore = owner, resumable != 0, fromMicros(notBefore)
	if inputs.Valid {
		st.Inputs = json.RawMessage(inputs.String)
	}
	if sp.Valid {
		var x spec
		if err := json.Unmarshal([]byte(sp.String), &x); err != nil {
			return 0, st, fmt.Errorf("task %s: stored spec is not JSON: %w", st.Info.TaskID, err)
		}
		st.Retry = apcore.RetryConfig{MaxRetries: x.MaxRetries, RetryDelay: x.RetryDelay,
			BackoffMultiplier: x.BackoffMultiplier, MaxRetryDelay: x.MaxRetryDelay}
		st.Timeout, st.Trace = x.Timeout, x.Trace
	}
	return seq, st, nil
}

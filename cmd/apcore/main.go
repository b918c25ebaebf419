// Command apcore is the operator's tool for an apcore task store: it brings
// the store's schema up to date, lists, shows and cancels tasks, and counts
// them, from a shell, against the store that a service's task managers
// share.
//
//	apcore migrate                       # create or upgrade the schema
//	apcore tasks list [--status S] [--module M] [--limit N] [--after CURSOR] [--newest]
//	apcore tasks show ID
//	apcore tasks cancel ID
//	apcore stats
//
// The store comes from --store or the environment variable APCORE_STORE:
// "sqlite:PATH" (a database file), "postgres://..." or "postgresql://..."
// (a libpq URL, through pgx), or "redis://..." / "rediss://..." (go-redis's
// URL). --table names sqlstore's table (default apcore_tasks), --prefix
// redisstore's key prefix (default "apcore:tasks:"). --timeout bounds the
// whole command (default 10s), the connection included. Only migrate
// changes a schema (sqlstore.Migrate; a Redis store has none, only a layout
// version, which redisstore checks): the other commands open a SQL store
// with sqlstore.WithoutMigrate, and a table that is missing or older than
// this build's sqlstore.SchemaVersion fails them with "needs apcore migrate
// first". Flags may come
// anywhere after the command's name, also before a task id:
// "apcore tasks show --store URL ID".
//
// Output is a table for people; with --json it is the protocol's wire
// format, each record as TaskInfo.MarshalJSON writes it: a record for tasks
// show, {"tasks":[...],"next":"CURSOR"} for tasks list (the same shape as
// the dashboard's GET /api/tasks, with no "next" on the last page),
// {"cancelled":BOOL,"task":{...}} for tasks cancel, and an object of counts
// for stats.
//
// Exit codes: 0 when the command did what it was asked (a cancel of a task
// that had already ended included: it says so), 1 when it failed (a store
// that cannot be reached within --timeout, an unknown task id, an error of
// the store), 2 for a usage error (an unknown command or flag, a missing or
// malformed argument, a --store URL of no known kind). Either way one line
// on stderr says why; no usage text follows a failure.
//
// Nothing here creates a TaskManager. A manager over a shared store takes a
// lease, recovers the tasks of replicas whose lease ended, claims resumable
// tasks, and on Shutdown cancels every active record that no live manager
// holds: a command that asked to cancel one task would change others. So
// each command talks to the store through the capabilities every shipped
// store implements: apcore.Pager for listing (one page per store call, so a
// listing costs its page, not the records kept), apcore.Counter for counts,
// Get for one record, and apcore.ConditionalSaver for cancel, which writes
// the cancelled record only while it is pending or running, exactly as a
// TaskManager's Cancel does for a task that another manager holds; that
// manager's watcher sees the record end (apcore.SharedStore's Lost) within
// about 200 ms and cancels the module's context.
//
// The command line is parsed by github.com/spf13/cobra: nested subcommands
// with persistent flags that may come before or after arguments (pflag's
// GNU-style parsing), and errors handed back to main rather than printed, so
// that main alone decides the message and the exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args, writing to stdout and stderr, and
// returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return exitOK
	}
	var fail *failure
	if errors.As(err, &fail) {
		fmt.Fprintln(stderr, "apcore: "+oneLine(fail.err.Error()))
		return exitError
	}
	// Anything else is the command line's fault: cobra's own errors
	// (unknown command or flag, a flag's bad value, a wrong number of
	// arguments) and ours (usageError).
	hint := "apcore --help"
	if cmd != nil {
		hint = cmd.CommandPath() + " --help"
	}
	fmt.Fprintf(stderr, "apcore: %s (see %s)\n", oneLine(err.Error()), hint)
	return exitUsage
}

// failure is an error of a command that ran: exit code 1.
type failure struct{ err error }

func (f *failure) Error() string { return f.err.Error() }
func (f *failure) Unwrap() error { return f.err }

// usageError is a command line that does not make sense: exit code 2.
type usageError struct{ msg string }

func (u *usageError) Error() string { return u.msg }

// usagef makes a usageError.
func usagef(format string, a ...any) error {
	return &usageError{msg: fmt.Sprintf(format, a...)}
}

// oneLine joins the lines of a message, so that an error is one line on
// stderr whatever the driver put in it.
func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if !strings.ContainsAny(s, "\r\n") {
		return s
	}
	var b strings.Builder
	for _, line := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		line = strings.Join(strings.Fields(line), " ")
		if line == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(line)
	}
	return b.String()
}

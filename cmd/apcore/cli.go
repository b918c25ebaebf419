package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// globals are the flags every command takes.
type globals struct {
	store   string
	table   string
	prefix  string
	timeout time.Duration
	json    bool
}

// defaultScan is how many records a listing filtered by module, and the
// per-module counts of stats, read at most unless --scan says otherwise:
// the dashboard's bound for the same scan.
const defaultScan = 10_000

// maxScan bounds --scan.
const maxScan = 1_000_000

// newRoot builds the command tree, writing to stdout.
func newRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "apcore",
		Short: "Inspect and operate an apcore task store",
		Long: `apcore inspects and operates the task store that a service's apcore task
managers share: SQLite and PostgreSQL (sqlstore) or Redis (redisstore).

The store is --store URL, or the environment variable APCORE_STORE:
  sqlite:PATH                       a SQLite database file
  postgres://USER@HOST:PORT/DB?...  PostgreSQL (postgresql:// too)
  redis://HOST:PORT/DB              Redis (rediss:// for TLS)

Output is a table; --json prints the protocol's wire format.
Exit codes: 0 done, 1 failed (store unreachable, unknown task, ...), 2 usage.`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return usagef("name a command: migrate, tasks, stats")
		},
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{msg: err.Error()} })

	pf := root.PersistentFlags()
	pf.StringVar(&g.store, "store", "", "the store's URL (default $APCORE_STORE): sqlite:PATH, postgres://..., redis://...")
	pf.StringVar(&g.table, "table", "", "sqlstore's table (default "+defaultTable+"); SQLite and PostgreSQL only")
	pf.StringVar(&g.prefix, "prefix", "", "redisstore's key prefix (default "+defaultPrefix+"); Redis only")
	pf.DurationVar(&g.timeout, "timeout", 10*time.Second, "give up after this long, connecting included")
	pf.BoolVar(&g.json, "json", false, "print JSON (the protocol's wire format) instead of a table")

	root.AddCommand(newMigrate(g), newTasks(g), newStats(g))
	return root
}

// noArgs is cobra.NoArgs with a message of ours.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		if cmd.HasSubCommands() {
			return usagef("unknown command %q for %q", args[0], cmd.CommandPath())
		}
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), strings.Join(args, " "))
	}
	return nil
}

// oneID checks that a command got exactly one task id.
func oneID(cmd *cobra.Command, args []string) error {
	switch {
	case len(args) == 0:
		return usagef("%s needs a task id", cmd.CommandPath())
	case len(args) > 1:
		return usagef("%s takes one task id, got %d arguments", cmd.CommandPath(), len(args))
	case strings.TrimSpace(args[0]) == "":
		return usagef("%s: the task id is empty", cmd.CommandPath())
	}
	return nil
}

// action wraps what a command does once its arguments are checked: it opens
// the store under the --timeout deadline, and marks what goes wrong after
// that as a failure (exit code 1) rather than a usage error.
func action(g *globals, migrate bool, do func(ctx context.Context, cmd *cobra.Command, s *opened, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		if g.timeout <= 0 {
			return usagef("--timeout must be positive, got %s", g.timeout)
		}
		raw := g.store
		if raw == "" {
			raw = os.Getenv("APCORE_STORE")
		}
		if raw == "" {
			return usagef("no store: give --store URL or set APCORE_STORE")
		}
		ref, err := parseStore(raw, g.table, g.prefix)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
		defer cancel()
		s, err := open(ctx, ref, migrate)
		if err != nil {
			return &failure{timedOut(ctx, g.timeout, err)}
		}
		defer s.close()
		if err := do(ctx, cmd, s, args); err != nil {
			var u *usageError
			if errors.As(err, &u) {
				return err
			}
			return &failure{timedOut(ctx, g.timeout, err)}
		}
		return nil
	}
}

// timedOut says so when err came from the command's deadline.
func timedOut(ctx context.Context, d time.Duration, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) && !strings.Contains(err.Error(), "--timeout") {
		return &timeoutError{d: d, err: err}
	}
	return err
}

// timeoutError is an error that the --timeout deadline caused.
type timeoutError struct {
	d   time.Duration
	err error
}

func (e *timeoutError) Error() string {
	return "gave up after --timeout " + e.d.String() + ": " + e.err.Error()
}
func (e *timeoutError) Unwrap() error { return e.err }

// statusFlag checks a --status value.
func statusFlag(s string) (apcore.TaskStatus, error) {
	st := apcore.TaskStatus(strings.ToLower(strings.TrimSpace(s)))
	if s == "" {
		return "", nil
	}
	if !st.Valid() {
		return "", usagef("--status %q is not a state: pending, running, completed, failed or cancelled", s)
	}
	return st, nil
}

// intRange checks an int flag's value.
func intRange(f *pflag.FlagSet, name string, lo, hi int) error {
	n, err := f.GetInt(name)
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	if n < lo || n > hi {
		return usagef("--%s must be from %d to %d, got %d", name, lo, hi, n)
	}
	return nil
}

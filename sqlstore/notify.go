package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"reflect"
	"time"

	"github.com/apcore-go/apcore"
)

var _ apcore.Notifier = (*Store)(nil)

// The LISTEN connection's timing: how long it waits for a notification
// before it checks that the server still answers, how long that check may
// take, and the backoff between attempts to connect again.
var (
	listenIdle    = 30 * time.Second
	listenPing    = 5 * time.Second
	listenBackoff = []time.Duration{50 * time.Millisecond, 200 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second}
)

// Notify calls wake each time a transaction that InsertTx saved a task in
// commits (apcore.Notifier): the manager then claims at once instead of at
// its next poll. On PostgreSQL through the pgx driver
// (github.com/jackc/pgx/v5/stdlib, reached by reflection: sqlstore does
// not import pgx, so SQLite users neither build it nor get its driver
// registered) it takes one connection of the *sql.DB
// out of the pool for as long as ctx lasts and LISTENs on the table's
// channel (<table>_new); a connection that drops is made again with a
// backoff (50 ms up to 5 s), and wake is called once after each reconnect,
// for what was sent meanwhile; an idle connection is checked every 30 s.
// Its goroutine ends, and the connection is closed (not returned to the
// pool), when ctx ends. On SQLite, or through another driver, Notify does
// nothing and returns: the managers poll.
func (s *Store) Notify(ctx context.Context, wake func()) {
	if s.dialect != PostgreSQL || wake == nil || ctx.Err() != nil {
		return
	}
	go s.listen(ctx, wake)
}

// listen keeps a LISTEN connection until ctx ends.
func (s *Store) listen(ctx context.Context, wake func()) {
	failures := 0
	for ctx.Err() == nil {
		listened, err := s.listenOnce(ctx, wake, failures > 0)
		if errors.Is(err, errNotPgx) {
			return // another driver: polling alone
		}
		if listened {
			failures = 0
		}
		if ctx.Err() != nil {
			return
		}
		pause := listenBackoff[min(failures, len(listenBackoff)-1)]
		failures++
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// errNotPgx: the *sql.DB's driver is not pgx's stdlib, whose connection
// Notify needs to wait for notifications.
var errNotPgx = errors.New("sqlstore: Notify needs the pgx driver")

// listenOnce takes a connection, LISTENs, and calls wake for each
// notification until the connection fails or ctx ends; it reports whether
// LISTEN took effect. After a failure (again), it calls wake once LISTEN is
// in place, for the notifications that came while none listened. The
// connection is always closed at the end, never returned to the pool,
// where it would still be listening.
func (s *Store) listenOnce(ctx context.Context, wake func(), again bool) (bool, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	listened := false
	err = conn.Raw(func(dc any) error {
		c, ok := pgxConnOf(dc)
		if !ok {
			return errNotPgx
		}
		if err := c.exec(ctx, "LISTEN "+s.channel()); err != nil {
			return driver.ErrBadConn
		}
		listened = true
		if again {
			wake()
		}
		if err := waitLoop(ctx, c, wake); err != nil {
			return driver.ErrBadConn
		}
		return driver.ErrBadConn // ctx ended: close it, it still listens
	})
	if errors.Is(err, errNotPgx) {
		return false, err
	}
	return listened, nil
}

// waitLoop calls wake for each notification on c until c fails (the error)
// or ctx ends (nil).
func waitLoop(ctx context.Context, c pgxConn, wake func()) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdle)
		err := c.wait(wctx)
		timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			wake()
		case timedOut && !c.closed():
			// Idle: check that the server still answers (a connection
			// can die without a word).
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err := c.ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return err
			}
		default:
			return err
		}
	}
}

// pgxConn is the *pgx.Conn of a pgx stdlib connection, whose methods
// Notify calls by reflection (see Notify).
type pgxConn struct{ v reflect.Value }

// pgxConnOf returns the *pgx.Conn under dc, a driver connection of
// database/sql, if dc is pgx stdlib's (*stdlib.Conn, whose Conn method
// returns it).
func pgxConnOf(dc any) (pgxConn, bool) {
	t := reflect.TypeOf(dc)
	if t == nil || t.Kind() != reflect.Pointer || t.Elem().PkgPath() != "github.com/jackc/pgx/v5/stdlib" {
		return pgxConn{}, false
	}
	m := reflect.ValueOf(dc).MethodByName("Conn")
	if !m.IsValid() || m.Type().NumIn() != 0 || m.Type().NumOut() != 1 {
		return pgxConn{}, false
	}
	c := m.Call(nil)[0]
	if c.Kind() != reflect.Pointer || c.IsNil() || c.Type().Elem().PkgPath() != "github.com/jackc/pgx/v5" {
		return pgxConn{}, false
	}
	for _, name := range []string{"Exec", "WaitForNotification", "Ping", "IsClosed"} {
		if !c.MethodByName(name).IsValid() {
			return pgxConn{}, false
		}
	}
	return pgxConn{c}, true
}

// call calls method name with args and returns its last result as an
// error (nil when it is nil).
func (c pgxConn) call(name string, args ...any) error {
	in := make([]reflect.Value, len(args))
	for i, a := range args {
		in[i] = reflect.ValueOf(a)
	}
	out := c.v.MethodByName(name).Call(in)
	last := out[len(out)-1]
	if last.IsNil() {
		return nil
	}
	err, _ := last.Interface().(error)
	return err
}

// exec is Conn.Exec(ctx, sql): one statement by the simple protocol.
func (c pgxConn) exec(ctx context.Context, sql string) error { return c.call("Exec", ctx, sql) }

// wait is Conn.WaitForNotification: nil when a notification came.
func (c pgxConn) wait(ctx context.Context) error { return c.call("WaitForNotification", ctx) }

// ping is Conn.Ping.
func (c pgxConn) ping(ctx context.Context) error { return c.call("Ping", ctx) }

// closed is Conn.IsClosed.
func (c pgxConn) closed() bool { return c.v.MethodByName("IsClosed").Call(nil)[0].Bool() }

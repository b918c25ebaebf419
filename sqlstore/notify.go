package sqlstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
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
// (github.com/jackc/pgx/v5/stdlib) it takes one connection of the *sql.DB
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
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return errNotPgx
		}
		c := sc.Conn()
		if _, err := c.Exec(ctx, "LISTEN "+s.channel()); err != nil {
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
func waitLoop(ctx context.Context, c *pgx.Conn, wake func()) error {
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdle)
		_, err := c.WaitForNotification(wctx)
		timedOut := errors.Is(wctx.Err(), context.DeadlineExceeded)
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil
		case err == nil:
			wake()
		case timedOut && !c.IsClosed():
			// Idle: check that the server still answers (a connection
			// can die without a word).
			pctx, cancel := context.WithTimeout(ctx, listenPing)
			err := c.Ping(pctx)
			cancel()
			if err != nil && ctx.Err() == nil {
				return err
			}
		default:
			return err
		}
	}
}

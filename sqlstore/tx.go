package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/apcore-go/apcore"
)

// Submit inside the caller's transaction (apcore.WithTx, apcore.TxInserter).

var _ apcore.TxInserter = (*Store)(nil)

// foreignTxMessage is the error database/sql's Tx.StmtContext gives a
// statement prepared on another *sql.DB than the transaction's: InsertTx
// reads it as "tx is of another database" (see ownTx).
const foreignTxMessage = "sql: Tx.Stmt: statement from different database used"

// txSavepoint is the savepoint InsertTx's statements run under on
// PostgreSQL.
const txSavepoint = "apcore_insert_tx"

// InsertTx is Insert made in tx (apcore.TxInserter, behind apcore.WithTx):
// the record exists for every other connection, and any manager may claim
// it, only once tx commits; a rollback leaves no record and the count of
// active records as it was. The admission is Insert's, inside tx: at most
// limit active records, exact across processes (see Admission in the
// package doc).
//
// tx must be a transaction begun on the *sql.DB given to New (db.BeginTx):
// a transaction of any other *sql.DB, even one open on the same database,
// is refused with GENERAL_INVALID_INPUT before any statement reaches the
// database, so tx stays as it was and can still commit its own work. A
// transaction that has ended is GENERAL_INVALID_INPUT too.
//
// On PostgreSQL the insert runs under a savepoint: a refusal (at the limit,
// a duplicate) or an error of its own statements rolls back to it, so it
// never aborts the caller's transaction nor keeps the count rows it
// locked; a deadlock that PostgreSQL broke is tried once more. A saved
// record also sends NOTIFY on the table's channel (<table>_new), which
// PostgreSQL delivers when, and only if, tx commits: the managers that
// listen (see Notify) claim it at once. Until tx ends, the insert keeps the
// lock of the count row it raised, one of 16: other inserts that hash to
// that row, ends of the tasks counted in it, and an insert that must share
// the cap out anew (which locks all 16) wait for tx. When this insert
// itself had to share the cap out anew (the first insert under a new
// limit, or its row's share used up, near the limit), tx keeps all 16
// until it ends, and every insert and task end of the table waits for it.
// Keep such transactions short.
//
// On SQLite the insert needs the database's write lock, which tx then
// keeps until it ends: every other writer of the database, each manager's
// included, waits for it (busy_timeout) meanwhile. A refused insert
// changes nothing in tx. No NOTIFY: managers find the task at their next
// claim poll.
func (s *Store) InsertTx(ctx context.Context, tx *sql.Tx, task apcore.StoredTask, limit int) (bool, error) {
	if tx == nil {
		return false, invalid("sqlstore: InsertTx needs a transaction")
	}
	if err := s.ownTx(ctx, tx); err != nil {
		return false, err
	}
	if s.dialect != PostgreSQL {
		// A failed statement undoes only itself: tx goes on.
		return s.insertOn(ctx, tx, task, limit)
	}
	return s.insertTxPG(ctx, tx, task, limit)
}

// ownTx checks that tx is a transaction of s.db that has not ended, without
// sending anything to the database unless the insert statement was never
// prepared on tx's connection: database/sql's Tx.StmtContext refuses a
// statement of another *sql.DB, and the refusal is read from its Close.
func (s *Store) ownTx(ctx context.Context, tx *sql.Tx) error {
	err := tx.StmtContext(ctx, s.st.insert).Close()
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrTxDone):
		return invalid("sqlstore: InsertTx: the transaction has already committed or rolled back")
	case err.Error() == foreignTxMessage:
		return invalid(fmt.Sprintf("sqlstore: InsertTx: the transaction is not of this store's database: begin it on the *sql.DB given to sqlstore.New (table %s)", s.table))
	}
	return unavailable("InsertTx: use the transaction", err)
}

// insertTxPG is InsertTx on PostgreSQL: insertOn under a savepoint, then
// NOTIFY. A statement that fails in a PostgreSQL transaction aborts it
// (every later statement fails until ROLLBACK); rolling back to the
// savepoint undoes that, and releases the count rows that the refused or
// failed insert locked.
func (s *Store) insertTxPG(ctx context.Context, tx *sql.Tx, task apcore.StoredTask, limit int) (bool, error) {
	if _, err := tx.ExecContext(ctx, "SAVEPOINT "+txSavepoint); err != nil {
		return false, unavailable("InsertTx: savepoint", err)
	}
	for try := 0; ; try++ {
		ok, err := s.insertOn(ctx, tx, task, limit)
		if err == nil && ok && ctx.Err() == nil {
			// one round trip: a statement without arguments goes by the
			// simple protocol, which takes several
			if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT "+txSavepoint+"; NOTIFY "+s.channel()); err != nil {
				return false, unavailable("InsertTx: release the savepoint and notify", err)
			}
			return true, nil
		}
		if err == nil && ok {
			// The caller gave up (its context ended) after the insert:
			// undo it, so that Submit's error and tx agree.
			err = unavailable("InsertTx: insert "+task.Info.TaskID, ctx.Err())
			ok = false
		}
		// Undo even when ctx has ended: tx outlives it.
		undo := context.WithoutCancel(ctx)
		if _, rerr := tx.ExecContext(undo, "ROLLBACK TO SAVEPOINT "+txSavepoint); rerr != nil {
			return false, errors.Join(err, unavailable("InsertTx: roll back to the savepoint", rerr))
		}
		if try == 0 && isDeadlock(err) && ctx.Err() == nil {
			continue
		}
		if _, rerr := tx.ExecContext(undo, "RELEASE SAVEPOINT "+txSavepoint); rerr != nil {
			return false, errors.Join(err, unavailable("InsertTx: release the savepoint", rerr))
		}
		return ok, err
	}
}

// channel is the table's notification channel on PostgreSQL: InsertTx
// sends NOTIFY on it, Notify listens to it.
func (s *Store) channel() string { return s.table + "_new" }

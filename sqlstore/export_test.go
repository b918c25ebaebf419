package sqlstore

import (
	"context"
	"database/sql"

	"github.com/apcore-go/apcore"
)

// ExplainQuery is explainQuery, for the tests that explain the store's
// queries their own way (EXPLAIN (FORMAT JSON) of a prepared statement).
var ExplainQuery = (*Store).explainQuery

// InsertOnForTest is insertOn on a caller's transaction.
func InsertOnForTest(s *Store, ctx context.Context, tx *sql.Tx, task apcore.StoredTask, limit int) (bool, error) {
	return s.insertOn(ctx, tx, task, limit)
}

// DBForTest is the Store's *sql.DB.
func DBForTest(s *Store) *sql.DB { return s.db }

// Package ptstore opens the shared stores of the process tests from a
// one-line spec, the same way in the test and in its child processes.
package ptstore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL for database/sql
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite" // SQLite for database/sql
)

// Open opens spec: "sqlite:PATH", "postgres:DSN#TABLE" or "redis:URL#PREFIX".
// The returned function closes the connections.
func Open(ctx context.Context, spec string) (apcore.SharedStore, func(), error) {
	kind, rest, ok := strings.Cut(spec, ":")
	if !ok {
		return nil, nil, fmt.Errorf("store spec %q: want KIND:ADDRESS", spec)
	}
	switch kind {
	case "sqlite":
		db, err := sql.Open("sqlite", "file:"+rest+"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)")
		if err != nil {
			return nil, nil, err
		}
		db.SetMaxIdleConns(32)
		s, err := sqlstore.New(ctx, db, sqlstore.SQLite)
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return s, func() { db.Close() }, nil
	case "postgres":
		dsn, table, _ := strings.Cut(rest, "#")
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, nil, err
		}
		db.SetMaxIdleConns(32)
		var opts []sqlstore.Option
		if table != "" {
			opts = append(opts, sqlstore.WithTable(table))
		}
		s, err := sqlstore.New(ctx, db, sqlstore.PostgreSQL, opts...)
		if err != nil {
			db.Close()
			return nil, nil, err
		}
		return s, func() { db.Close() }, nil
	case "redis":
		url, prefix, _ := strings.Cut(rest, "#")
		o, err := redis.ParseURL(url)
		if err != nil {
			return nil, nil, err
		}
		o.PoolSize = 64
		client := redis.NewClient(o)
		var opts []redisstore.Option
		if prefix != "" {
			opts = append(opts, redisstore.WithPrefix(prefix))
		}
		s, err := redisstore.New(client, opts...)
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		return s, func() { client.Close() }, nil
	}
	return nil, nil, fmt.Errorf("store spec %q: unknown kind %q", spec, kind)
}

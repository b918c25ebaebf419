// Command apcore-consumer is a program outside the repository that uses
// its modules the way a user does, through go get: scripts/consumer.sh
// copies this folder into a temporary one, gets
// github.com/apcore-go/apcore, .../sqlstore and .../redisstore at the
// version under test from a local module proxy, then builds and runs it
// with no network. Its go.mod here requires nothing on purpose: go get
// adds the requirements there.
//
// It runs one task through a TaskManager whose records live in a SQLite
// file (sqlstore), reads the record back from the file, and asks
// redisstore.New for a store over a Redis that does not answer (port 1 on
// loopback), which it refuses with TASK_STORE_UNAVAILABLE: New checks that
// Redis answers a PING, and no server is needed here. Each line it prints
// is checked by scripts/consumer.sh.
package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/redis/go-redis/v9"
	_ "modernc.org/sqlite"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "apcore-consumer:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "apcore-consumer-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "tasks.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := sqlstore.New(ctx, db, sqlstore.SQLite)
	if err != nil {
		return err
	}

	reg := apcore.NewRegistry()
	if err := reg.Register("math.double", apcore.ModuleFunc(func(ctx context.Context, in map[string]any) (any, error) {
		n, ok := in["n"].(int)
		if !ok {
			return nil, apcore.Permanent(errors.New("n is not an int"))
		}
		return n * 2, nil
	})); err != nil {
		return err
	}
	mgr, err := apcore.NewTaskManager(reg, apcore.WithStore(store))
	if err != nil {
		return err
	}
	defer mgr.Shutdown(ctx)

	id, err := mgr.Submit(ctx, "math.double", map[string]any{"n": 21})
	if err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := mgr.Wait(wctx, id)
	if err != nil {
		return err
	}
	fmt.Printf("task math.double(21): %s, result %v\n", info.Status, info.Result)

	// The record as the SQLite file keeps it, read without the manager.
	rec, err := store.Get(ctx, id)
	if err != nil {
		return err
	}
	fmt.Printf("%s record: %s, result %v\n", store.Name(), rec.Status, rec.Result)

	redis.SetLogger(quiet{}) // go-redis would log each failed dial
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1})
	defer client.Close()
	if _, err := redisstore.New(client); !errors.Is(err, apcore.ErrStoreUnavailable) {
		return fmt.Errorf("redisstore.New with no Redis at 127.0.0.1:1: %v, want %s", err, apcore.CodeTaskStoreUnavailable)
	}
	fmt.Printf("redisstore.New with no Redis: %s\n", apcore.CodeTaskStoreUnavailable)
	return nil
}

// quiet is a go-redis logger that drops everything.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

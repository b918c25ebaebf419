package sqlstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/sqlstore"
	"github.com/stretchr/testify/require"
)

// WithTx and WithUniqueKey: a key held by a committed task refuses a
// second Submit WithTx with TASK_DUPLICATE naming the holder, and the
// transaction goes on (PostgreSQL: the savepoint); a key whose only
// holder was rolled back is free again. Priorities are kept.
func TestTxWithUniqueKeyAndPriority(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			reg := apcore.NewRegistry()
			block := make(chan struct{})
			t.Cleanup(func() { close(block) })
			require.NoError(t, reg.Register("tx.hold", apcore.ModuleFunc(func(ctx context.Context, _ map[string]any) (any, error) {
				select {
				case <-block:
				case <-ctx.Done():
				}
				return nil, nil
			})))
			s := b.open(t)
			m := manager(t, reg, s)
			db := sqlstore.DBForTest(s)

			tx, err := db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			gone, err := m.Submit(ctx(t), "tx.hold", nil, apcore.WithTx(tx), apcore.WithUniqueKey("order-7"))
			require.NoError(t, err)
			require.NoError(t, tx.Rollback())

			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			first, err := m.Submit(ctx(t), "tx.hold", nil, apcore.WithTx(tx), apcore.WithUniqueKey("order-7"), apcore.WithPriority(7))
			require.NoError(t, err, "the rolled-back %s still holds the key", gone)
			require.NoError(t, tx.Commit())
			info, err := s.Get(ctx(t), first)
			require.NoError(t, err)
			require.Equal(t, "order-7", info.UniqueKey)
			require.Equal(t, 7, info.Priority)

			tx, err = db.BeginTx(ctx(t), nil)
			require.NoError(t, err)
			defer tx.Rollback()
			dupID, err := m.Submit(ctx(t), "tx.hold", nil, apcore.WithTx(tx), apcore.WithUniqueKey("order-7"))
			require.ErrorIs(t, err, apcore.ErrDuplicateTask)
			var dup *apcore.DuplicateError
			require.True(t, errors.As(err, &dup), "%v", err)
			require.Equal(t, first, dup.TaskID)
			require.Equal(t, first, dupID)
			// the transaction goes on
			other, err := m.Submit(ctx(t), "tx.hold", nil, apcore.WithTx(tx), apcore.WithUniqueKey("order-8"))
			require.NoError(t, err)
			require.NoError(t, tx.Commit())
			_, err = s.Get(ctx(t), other)
			require.NoError(t, err)
		})
	}
}

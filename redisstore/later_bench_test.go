package redisstore_test

import (
	"fmt"
	"testing"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/storetest"
)

// go test -run '^$' -bench 'UniqueSubmit|ScheduledIdle': Submit with and
// without a unique key, side by side; the CPU of an idle manager while
// tasks due later wait, and how late tasks due soon start
// (ScheduledIdle: use -benchtime 1x).
func BenchmarkUniqueSubmitRedis(b *testing.B) {
	c := client(b)
	storetest.BenchmarkUniqueSubmit(b, func() (apcore.TaskStore, error) {
		return redisstore.New(c, redisstore.WithPrefix(freshPrefix(b, c)))
	})
}

func BenchmarkScheduledIdleRedis(b *testing.B) {
	c := client(b)
	for _, waiting := range []int{0, 100_000} {
		b.Run(fmt.Sprintf("waiting=%d", waiting), func(b *testing.B) {
			storetest.BenchmarkScheduledIdle(b, func() (apcore.TaskStore, error) {
				return redisstore.New(c, redisstore.WithPrefix(freshPrefix(b, c)))
			}, waiting)
		})
	}
}

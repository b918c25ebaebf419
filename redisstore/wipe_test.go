package redisstore_test

import (
	"context"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// When Redis loses its data (FLUSHALL, or a restart without persistence),
// the store tells a lost record from a deleted one (its sequence counter,
// which only grows, went back) and lets the owner keep what it holds: a
// running task is not reported lost (so not cancelled), its lease is made
// anew instead of lapsing, and its terminal write creates the record
// again. What the owner had already forgotten (a task that completed
// before the loss) is gone: that record is not found; bringing it back is
// the core's part (owners writing back what they know).
func TestRedisLosesItsData(t *testing.T) {
	for _, how := range []string{"flushall", "restart", "flushall,layout=2"} {
		t.Run(how, func(t *testing.T) {
			layout := 1
			if strings.HasSuffix(how, "layout=2") {
				layout = 2
			}
			s, c := store(t, redisstore.WithLayout(layout))
			throwaway(t, c)
			release := newGate()
			defer release.open()
			interrupted := make(chan error, 1)
			m := manager(t, registry(t, map[string]func(context.Context, map[string]any) (any, error){
				"wipe.quick": func(context.Context, map[string]any) (any, error) { return "early", nil },
				"wipe.hold": func(ctx context.Context, _ map[string]any) (any, error) {
					select {
					case <-release.ch:
						return "late", nil
					case <-ctx.Done():
						interrupted <- ctx.Err()
						return nil, ctx.Err()
					}
				},
			}), s, apcore.WithLeaseTTL(3*time.Second))
			early, err := m.Submit(ctx(t), "wipe.quick", nil)
			require.NoError(t, err)
			info, err := m.Wait(ctx(t), early)
			require.NoError(t, err)
			require.Equal(t, apcore.StatusCompleted, info.Status)
			held, err := m.Submit(ctx(t), "wipe.hold", nil)
			require.NoError(t, err)
			require.True(t, eventually(10*time.Second, func() bool {
				got, err := s.Get(ctx(t), held)
				return err == nil && got.Status == apcore.StatusRunning
			}), "the task did not start")

			if strings.HasPrefix(how, "flushall") {
				require.NoError(t, c.FlushAll(ctx(t)).Err())
			} else {
				restartEmpty(t, c)
			}
			n, err := c.Exists(ctx(t), s.Key(early), s.Key(held)).Result()
			require.NoError(t, err)
			require.Zero(t, n, "the records are still there")
			// Longer than a lease renewal (TTL/3) and many Lost polls.
			select {
			case err := <-interrupted:
				t.Fatalf("the running task was stopped after Redis lost its data: %v", err)
			case <-time.After(1500 * time.Millisecond):
			}
			release.open()
			info, err = m.Wait(ctx(t), held)
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusCompleted, info.Status, "Wait on the task running during the loss")
			assert.Equal(t, "late", info.Result)
			status, err := m.Status(ctx(t), held)
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusCompleted, status.Status, "Status after the loss: the owner's write made the record again")
			active, err := s.Count(ctx(t), apcore.StatusPending, apcore.StatusRunning)
			require.NoError(t, err)
			assert.Zero(t, active, "active records after the task ended")

			// What the store cannot bring back: the record of a task that
			// had completed before the loss, which the owner no longer
			// holds.
			_, err = m.Status(ctx(t), early)
			assert.ErrorIs(t, err, apcore.ErrTaskNotFound, "a task completed before the loss (the core does not write it back)")

			// A store opened now has the layout the running Stores write.
			again, err := redisstore.New(c, redisstore.WithPrefix(strings.TrimSuffix(s.Key("x"), "x")))
			require.NoError(t, err)
			got, err := again.List(ctx(t), apcore.StatusCompleted)
			require.NoError(t, err)
			assert.Len(t, got, 1, "the record written anew, read by a new Store")

			// The manager keeps working.
			id, err := m.Submit(ctx(t), "wipe.quick", nil)
			require.NoError(t, err)
			info, err = m.Wait(ctx(t), id)
			require.NoError(t, err)
			assert.Equal(t, apcore.StatusCompleted, info.Status)
		})
	}
}

// restartEmpty SIGKILLs the server c talks to and starts it again, on the
// same port and without persistence, so it comes back empty.
func restartEmpty(t *testing.T, c *redis.Client) {
	t.Helper()
	pid, conf := masterProcess(t, c)
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL))
	require.True(t, eventually(10*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }), "the server did not die")
	out, err := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", conf.port, "--dir", conf.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", conf.pidfile, "--logfile", conf.logfile).CombinedOutput()
	require.NoError(t, err, "restart the server: %s", out)
	require.True(t, eventually(10*time.Second, func() bool { return c.Ping(context.Background()).Err() == nil }), "the server did not come back")
}

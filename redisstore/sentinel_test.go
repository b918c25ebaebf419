package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/apcore-go/apcore"
	"github.com/apcore-go/apcore/redisstore"
	"github.com/apcore-go/apcore/storetest"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sentinelSetup reads APCORE_TEST_REDIS_SENTINEL ("name@addr,addr,...",
// from scripts/services.sh: start_redis_sentinel).
func sentinelSetup(t *testing.T) (master string, sentinels []string) {
	t.Helper()
	v := os.Getenv("APCORE_TEST_REDIS_SENTINEL")
	name, addrs, ok := strings.Cut(v, "@")
	if !ok {
		t.Fatal("APCORE_TEST_REDIS_SENTINEL is not set: run ./scripts/test.sh, which starts a Redis master, a replica and three Sentinels (scripts/services.sh: start_redis_sentinel)")
	}
	return name, strings.Split(addrs, ",")
}

// SIGKILL the master mid-run: a Sentinel promotes the replica, the manager
// (over a FailoverClient) works again within seconds, and the test states
// what the failover lost. Replication is asynchronous: what the master
// acknowledged but had not yet sent to the replica is gone.
func TestSentinelFailover(t *testing.T) {
	name, sentinels := sentinelSetup(t)
	failover := func() *redis.Client {
		c := redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: name, SentinelAddrs: sentinels,
			DialTimeout: 500 * time.Millisecond, ReadTimeout: time.Second, WriteTimeout: time.Second,
			MaxRetries: 3, MinRetryBackoff: 50 * time.Millisecond, MaxRetryBackoff: 200 * time.Millisecond,
		})
		t.Cleanup(func() { c.Close() })
		return c
	}
	sc := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0]})
	t.Cleanup(func() { sc.Close() })
	addr, err := sc.GetMasterAddrByName(ctx(t), name).Result()
	require.NoError(t, err, "ask a Sentinel for the master")
	oldMaster := net.JoinHostPort(addr[0], addr[1])
	direct := redis.NewClient(&redis.Options{Addr: oldMaster})
	defer direct.Close()
	throwaway(t, direct)
	pid, conf := masterProcess(t, direct)

	c := failover()
	prefix := freshPrefix(t, c)
	s, err := redisstore.New(c, redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	m := manager(t, registry(t, map[string]func(context.Context, map[string]any) (any, error){
		"failover.echo": func(_ context.Context, in map[string]any) (any, error) { return in["i"], nil },
	}), s)

	// Four submitters, each Submit then Wait, before, during and after the
	// kill.
	type outcome struct {
		id        string
		completed bool
	}
	var mu sync.Mutex
	var acked []outcome
	var submitErrs, waitErrs int
	var killedAt, backAt time.Time
	stop := make(chan struct{})
	submit := func(g int) {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			afterKill := !killedAt.IsZero()
			mu.Unlock()
			call, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			id, err := m.Submit(call, "failover.echo", map[string]any{"i": g*1_000_000 + i})
			if err != nil {
				cancel()
				mu.Lock()
				submitErrs++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond) // pace retries while the store is away
				continue
			}
			info, err := m.Wait(call, id)
			cancel()
			mu.Lock()
			acked = append(acked, outcome{id, err == nil && info.Status == apcore.StatusCompleted})
			if err != nil {
				waitErrs++
			}
			if afterKill && backAt.IsZero() && err == nil && info.Status == apcore.StatusCompleted {
				backAt = time.Now() // the first task submitted after the kill that completed
			}
			mu.Unlock()
		}
	}
	done := make(chan struct{})
	var submitters sync.WaitGroup
	for g := range 4 {
		submitters.Add(1)
		go func() {
			defer submitters.Done()
			submit(g)
		}()
	}
	go func() {
		submitters.Wait()
		close(done)
	}()
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-done
	}()
	require.True(t, eventually(20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 300
	}), "the manager did not run 300 tasks before the kill")

	mu.Lock()
	killedAt = time.Now()
	beforeKill := len(acked)
	mu.Unlock()
	require.NoError(t, syscall.Kill(pid, syscall.SIGKILL), "SIGKILL the master")
	t.Cleanup(func() { restartAsReplica(t, conf, oldMaster, sc, name) })

	require.True(t, eventually(30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !backAt.IsZero() && len(acked) >= beforeKill+50
	}), "the manager did not work again within 30s of the kill")
	close(stop)
	<-done
	// The Sentinel asked here may not have led the failover: it learns the
	// new master from the others' hello messages, within seconds.
	var newMaster string
	assert.True(t, eventually(15*time.Second, func() bool {
		addr, err := sc.GetMasterAddrByName(ctx(t), name).Result()
		if err != nil {
			return false
		}
		newMaster = net.JoinHostPort(addr[0], addr[1])
		return newMaster != oldMaster
	}), "a Sentinel promoted the replica, and the one asked here names it within 15s (it still names %s)", oldMaster)

	// What the failover lost, as seen through a fresh client.
	check, err := redisstore.New(failover(), redisstore.WithPrefix(prefix))
	require.NoError(t, err)
	var missing, regressed, ok int
	var notCompleted int
	mu.Lock()
	for _, o := range acked {
		if !o.completed {
			notCompleted++
			continue
		}
		info, err := check.Get(ctx(t), o.id)
		switch {
		case errors.Is(err, apcore.ErrTaskNotFound):
			missing++
		case err != nil:
			t.Fatalf("reading %s after the failover: %v", o.id, err)
		case info.Status != apcore.StatusCompleted:
			regressed++
		default:
			ok++
		}
	}
	t.Logf("failover %s -> %s: %d tasks before the kill, %d after; first task through %v after the kill; "+
		"%d Submits refused and %d Waits failed while the master was away; of %d tasks reported completed, "+
		"%d records are completed, %d are gone and %d are back in an earlier state (pending or running); %d acknowledged tasks never reported completed",
		oldMaster, newMaster, beforeKill, len(acked)-beforeKill, backAt.Sub(killedAt).Round(time.Millisecond),
		submitErrs, waitErrs, len(acked)-notCompleted, ok, missing, regressed, notCompleted)
	mu.Unlock()
	assert.Less(t, backAt.Sub(killedAt), 20*time.Second, "the manager works again within 20s")

	// Submit and Wait work again, on the new master.
	for i := range 20 {
		id, err := m.Submit(ctx(t), "failover.echo", map[string]any{"i": i})
		require.NoError(t, err)
		info, err := m.Wait(ctx(t), id)
		require.NoError(t, err)
		assert.Equal(t, apcore.StatusCompleted, info.Status)
	}
}

// masterConf is what restarting a killed server needs.
type masterConf struct{ port, dir, pidfile, logfile string }

// masterProcess returns the pid of the server c talks to (it must run on
// this machine) and its configuration.
func masterProcess(t *testing.T, c *redis.Client) (int, masterConf) {
	t.Helper()
	info, err := c.Info(ctx(t), "server").Result()
	require.NoError(t, err)
	pid := 0
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			_, err := fmt.Sscan(v, &pid)
			require.NoError(t, err)
		}
	}
	require.NotZero(t, pid, "INFO server has no process_id")
	get := func(k string) string {
		v, err := c.ConfigGet(ctx(t), k).Result()
		require.NoError(t, err)
		return v[k]
	}
	return pid, masterConf{port: get("port"), dir: get("dir"), pidfile: get("pidfile"), logfile: get("logfile")}
}

// restartAsReplica starts the killed master again, as a replica of the
// master the Sentinels now name, so that the setup can fail over again. (It
// must not come back as an empty master: a Sentinel could fail over to it
// and have the real master copy its empty data set.)
func restartAsReplica(t *testing.T, conf masterConf, addr string, sc *redis.SentinelClient, name string) {
	var cur []string
	if !eventually(30*time.Second, func() bool {
		var err error
		cur, err = sc.GetMasterAddrByName(context.Background(), name).Result()
		return err == nil && net.JoinHostPort(cur[0], cur[1]) != addr
	}) {
		t.Errorf("no Sentinel names a master other than the killed %s within 30s (it names %v)", addr, cur)
		return
	}
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", conf.port, "--dir", conf.dir,
		"--save", "", "--appendonly", "no", "--daemonize", "yes", "--pidfile", conf.pidfile, "--logfile", conf.logfile,
		"--replicaof", cur[0], cur[1])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("restart the killed master: %v: %s", err, out)
		return
	}
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	if !eventually(30*time.Second, func() bool {
		info, err := c.Info(context.Background(), "replication").Result()
		return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
	}) {
		t.Errorf("the restarted master %s did not become a synced replica within 30s", addr)
	}
}

// The contract holds through a FailoverClient too.
func TestSentinelContract(t *testing.T) {
	name, sentinels := sentinelSetup(t)
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: name, SentinelAddrs: sentinels})
	t.Cleanup(func() { c.Close() })
	storetest.Run(t, func() (apcore.TaskStore, error) {
		return redisstore.New(c, redisstore.WithPrefix(freshPrefix(t, c)))
	})
}

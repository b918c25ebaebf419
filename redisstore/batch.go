package redisstore

import (
	"context"
	"slices"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Updates that callers make at the same time go to Redis together, in one
// pipeline: one write and one read for the batch instead of one of each
// per Update, on the client and on the server. The caller that finds no
// batch on its way starts a sender goroutine with its own Update; those
// that come while a batch is on its way queue, and when it is back the
// sender takes the whole queue as the next batch, until the queue is
// empty and the sender ends. So one batch at a time is on its way, and an
// Update is sent after every Update queued before it has been answered.
//
// Each caller waits for its own result or for its context to end,
// whichever comes first. A caller whose context ends while its Update
// waits in the queue takes it out: it is never sent. One whose Update is
// already on its way stops waiting at once, but the Update is not
// recalled (the batch goes on for the others): it may still be written,
// as any request that a cancel overtakes on the network may be.

// updates is the queue of Updates waiting for the batch on its way.
type updates struct {
	mu      sync.Mutex
	sending bool       // a batch is on its way: a sender goroutine runs
	queue   []*pending // what waits for it
}

// pending is one Update, queued or in a batch.
type pending struct {
	ctx  context.Context // the caller's, without its cancellation
	keys []string
	args []any
	n    int64
	err  error
	done chan struct{} // closed once n and err are set
}

// runUpdate runs updateScript with keys and args, in a batch with the
// Updates of other callers (see updates). It returns ctx's error as soon
// as ctx ends, whether the Update waits in the queue (then it is never
// sent) or is on its way.
func (s *Store) runUpdate(ctx context.Context, keys []string, args []any) (int64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	p := &pending{ctx: context.WithoutCancel(ctx), keys: keys, args: args, done: make(chan struct{})}
	u := &s.updates
	u.mu.Lock()
	if u.sending {
		u.queue = append(u.queue, p)
		u.mu.Unlock()
	} else {
		u.sending = true
		u.mu.Unlock()
		go s.sender([]*pending{p})
	}
	select {
	case <-p.done:
		return p.n, p.err
	case <-ctx.Done():
	}
	u.mu.Lock()
	if i := slices.Index(u.queue, p); i >= 0 { // still queued: never sent
		u.queue = slices.Delete(u.queue, i, i+1)
	}
	u.mu.Unlock()
	select {
	case <-p.done: // answered meanwhile
		return p.n, p.err
	default:
		return 0, ctx.Err()
	}
}

// sender sends batch, then each queue that gathered meanwhile as the next
// batch, and ends when nothing is queued.
func (s *Store) sender(batch []*pending) {
	u := &s.updates
	for {
		s.send(batch[0].ctx, batch)
		u.mu.Lock()
		if len(u.queue) == 0 {
			u.sending = false
			u.mu.Unlock()
			return
		}
		batch, u.queue = u.queue, nil
		u.mu.Unlock()
	}
}

// send runs a batch of Updates and hands each caller its result. A batch
// of one is one script call; a larger one a pipeline. ctx is the first
// caller's context without its cancellation: the other callers' Updates
// are not its to cancel.
func (s *Store) send(ctx context.Context, batch []*pending) {
	if len(batch) == 1 {
		p := batch[0]
		p.n, p.err = s.run(ctx, updateS, p.keys, p.args...).Int64()
		close(p.done)
		return
	}
	sc := s.pick(updateS)
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range batch {
			cmds[i] = sc.EvalSha(ctx, pipe, p.keys, p.args...)
		}
		return nil
	})
	for i, p := range batch {
		p.n, p.err = cmds[i].Int64()
		if p.err != nil && (redis.HasErrorPrefix(p.err, "NOSCRIPT") || relayout(p.err)) {
			// Redis does not have the script (it restarted, say), or
			// the store's layout changed: run sends it whole, of the
			// store's layout.
			p.n, p.err = s.run(ctx, updateS, p.keys, p.args...).Int64()
		}
		close(p.done)
	}
}

package redisstore

import (
	"context"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Updates that callers make at the same time go to Redis together, in one
// pipeline: one write and one read for the batch instead of one of each
// per Update, on the client and on the server. There is no goroutine of
// the store's own: the caller that finds no batch on its way sends its own
// Update at once; those that come while a batch is on its way queue, and
// when it is back the first of them sends the queue. Each caller waits for
// its own result only.

// updates is the queue of Updates waiting for the batch on its way.
type updates struct {
	mu      sync.Mutex
	sending bool       // a batch is on its way
	queue   []*pending // what waits for it
}

// pending is one queued Update.
type pending struct {
	keys []string
	args []any
	n    int64
	err  error
	// turn is closed when the result is set (done) or when this caller is
	// to send the queue (lead).
	turn chan struct{}
	lead bool
}

// runUpdate runs updateScript with keys and args, in a batch with the
// Updates of other callers (see updates).
func (s *Store) runUpdate(ctx context.Context, keys []string, args []any) (int64, error) {
	p := &pending{keys: keys, args: args}
	u := &s.updates
	u.mu.Lock()
	batch := []*pending{p}
	if u.sending {
		p.turn = make(chan struct{})
		u.queue = append(u.queue, p)
		u.mu.Unlock()
		<-p.turn
		if !p.lead {
			return p.n, p.err
		}
		u.mu.Lock()
		batch, u.queue = u.queue, nil
	}
	u.sending = true
	u.mu.Unlock()

	s.send(ctx, batch)

	u.mu.Lock()
	if len(u.queue) > 0 {
		next := u.queue[0]
		next.lead = true
		close(next.turn)
	} else {
		u.sending = false
	}
	u.mu.Unlock()
	return p.n, p.err
}

// send runs a batch of Updates and hands each caller its result. A batch
// of one is one script call; a larger one a pipeline. The batch is sent
// with the context of the caller sending it, without its cancellation:
// the other callers' Updates are not its to cancel.
func (s *Store) send(ctx context.Context, batch []*pending) {
	ctx = context.WithoutCancel(ctx)
	if len(batch) == 1 {
		p := batch[0]
		p.n, p.err = updateScript.Run(ctx, s.rdb, p.keys, p.args...).Int64()
		return
	}
	cmds := make([]*redis.Cmd, len(batch))
	_, _ = s.rdb.Pipelined(ctx, func(pipe redis.Pipeliner) error {
		for i, p := range batch {
			cmds[i] = updateScript.EvalSha(ctx, pipe, p.keys, p.args...)
		}
		return nil
	})
	for i, p := range batch {
		p.n, p.err = cmds[i].Int64()
		if p.err != nil && redis.HasErrorPrefix(p.err, "NOSCRIPT") {
			// Redis does not have the script (it restarted, say): Run
			// sends it whole.
			p.n, p.err = updateScript.Run(ctx, s.rdb, p.keys, p.args...).Int64()
		}
		if p.turn != nil && !p.lead { // the sender's own turn came already
			close(p.turn)
		}
	}
}

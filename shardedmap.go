package apcore

import "sync"

// shardedMap is a string-keyed map split into shards with a lock each:
// lookups of different keys seldom contend, keys are not boxed, and the
// cost of a lookup does not grow with the number of entries.
type shardedMap[V any] struct {
	shards [numShards]mapShard[V]
}

const numShards = 64

type mapShard[V any] struct {
	mu sync.Mutex
	m  map[string]V
	// tally counts the shard's values by state for MemoryStore (see
	// statusIndex), guarded by mu. It sits in what would be padding, on the
	// cache line the lock has already brought in, so that counting costs a
	// store no shared atomic per state change.
	tally [5]int64
	_     [64 - 8 - 8 - 40]byte // keep each shard on its own cache line
}

// init makes the shards' maps, sized for about hint keys in all, so that
// a map filled up to the hint does not rehash on the way.
func (s *shardedMap[V]) init(hint int) {
	for i := range s.shards {
		s.shards[i].m = make(map[string]V, hint/numShards)
	}
}

// shard returns the shard that holds key. It hashes at most the last eight
// bytes (FNV-1a): task ids are random UUIDs, whose tails spread well, and
// the map inside the shard hashes the whole key anyway.
func (s *shardedMap[V]) shard(key string) *mapShard[V] {
	h := uint32(2166136261)
	for i := max(len(key)-8, 0); i < len(key); i++ {
		h = (h ^ uint32(key[i])) * 16777619
	}
	return &s.shards[h%numShards]
}

func (s *shardedMap[V]) load(key string) (V, bool) {
	sh := s.shard(key)
	sh.mu.Lock()
	v, ok := sh.m[key]
	sh.mu.Unlock()
	return v, ok
}

func (s *shardedMap[V]) store(key string, v V) {
	sh := s.shard(key)
	sh.mu.Lock()
	sh.m[key] = v
	sh.mu.Unlock()
}

func (s *shardedMap[V]) delete(key string) {
	sh := s.shard(key)
	sh.mu.Lock()
	delete(sh.m, key)
	sh.mu.Unlock()
}

// remove deletes key and reports whether it was there.
func (s *shardedMap[V]) remove(key string) bool {
	sh := s.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	_, ok := sh.m[key]
	delete(sh.m, key)
	return ok
}

// values returns a snapshot of every value.
func (s *shardedMap[V]) values() []V {
	var out []V
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, v := range sh.m {
			out = append(out, v)
		}
		sh.mu.Unlock()
	}
	return out
}

// each calls fn for every value, one shard locked at a time; fn must not
// use the map.
func (s *shardedMap[V]) each(fn func(V)) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for _, v := range sh.m {
			fn(v)
		}
		sh.mu.Unlock()
	}
}

package apcore

import (
	"crypto/rand"
	"sync"

	"github.com/google/uuid"
)

// idPool hands out random bytes for task ids from a buffer refilled from
// crypto/rand, so that an id costs one small copy instead of a system call
// (BenchmarkTaskID compares it with uuid.NewString). uuid.EnableRandPool
// does the same inside the uuid package, but it is process-global: a
// library must not switch it on for the whole program it lives in.
var idPool struct {
	sync.Mutex
	buf [16 * 256]byte
	pos int
}

func init() { idPool.pos = len(idPool.buf) }

// newTaskID returns a random (version 4) UUID as a string.
func newTaskID() string {
	var u uuid.UUID
	idPool.Lock()
	if idPool.pos == len(idPool.buf) {
		_, _ = rand.Read(idPool.buf[:]) // never fails (crypto/rand.Read documents it)
		idPool.pos = 0
	}
	copy(u[:], idPool.buf[idPool.pos:])
	clear(idPool.buf[idPool.pos : idPool.pos+16])
	idPool.pos += 16
	idPool.Unlock()
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

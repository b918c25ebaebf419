package apcore

import (
	"math"
	mathbits "math/bits"
	"sort"
	"sync/atomic"
	"time"
)

// The MemoryStore's insertion order: records in blocks of blockSize
// consecutive sequence numbers, each block with its live records counted
// by state and a lower bound of its terminal records' reference times. A
// page seeks its first block by binary search and reads on from there; a
// listing of one state, a recovery and a sweep skip the blocks that hold
// nothing for them. So a page costs the page, a sweep costs its batch plus
// one glance per block, and none of them takes a lock that an insert needs.
//
// Readers take no lock of the index: the list of blocks is replaced as a
// whole (atomically) when it is compacted, and grows in place otherwise,
// beyond what any reader has loaded; slots and counts are atomic. A slot
// read this way is a hint: the record's own shard lock says whether it is
// still stored and in which state.

// blockSize is how many sequence numbers a block spans.
const (
	blockSize  = 256
	blockWords = blockSize / 64
)

// memBlock holds the records whose sequence numbers are base to
// base+blockSize-1; a slot is nil until its record is added and after it
// is removed.
type memBlock struct {
	// masks has a bit per slot for each state (statusIndex): set while the
	// slot's record is in that state. A record changing state is set in the
	// new state's mask before it is cleared from the old one, so a reader
	// may see it in both (and its shard lock says which holds), never in
	// neither.
	masks [5][blockWords]atomic.Uint64
	// minRef is at most the reference time (refMicros) of every terminal
	// record in the block; noRef when it has none. Writers only lower it;
	// a sweep that read the whole block may raise it back.
	minRef atomic.Int64
	base   uint64
	group  *memGroup // the group of blocks it belongs to; never changes
	slots  [blockSize]atomic.Pointer[memRecord]
}

// groupSize is how many blocks, made one after another, form a group.
const groupSize = 64

// memGroup is the second level: a flag per state, set while a block of the
// group may hold a record in that state, so that a listing of a state that
// few records are in glances at a group, not at each of its blocks.
// Writers set a flag after they set a slot's bit (and only when it is
// clear, so that the shared word is mostly read); a reader that glanced at
// every block of a group that is no longer the newest, and found none in a
// state, clears its flag and then looks at the blocks again, setting the
// flag back if one has such a record now: a writer that saw the flag set
// before the clear set its slot's bit before the second look.
type memGroup struct {
	flags  atomic.Uint32 // a bit per statusIndex
	blocks int           // how many blocks were made in it; written under MemoryStore.order
}

// note sets the group's flag of status.
func (g *memGroup) note(status TaskStatus) {
	bit := uint32(1) << statusIndex(status)
	if g.flags.Load()&bit == 0 {
		g.flags.Or(bit)
	}
}

// tidy clears the flags of the states of set that none of run, every block
// of the group, holds a record in.
func (g *memGroup) tidy(set statusSet, run []*memBlock) {
	for i := range 5 {
		bit := uint32(1) << i
		if set&(1<<i) == 0 || g.flags.Load()&bit == 0 {
			continue
		}
		g.flags.And(^bit)
		for _, b := range run {
			if b.holds(1 << i) {
				g.flags.Or(bit)
				break
			}
		}
	}
}

// statusSet is a set of states, a bit per statusIndex.
type statusSet uint8

const (
	everySet    statusSet = 1<<5 - 1
	activeSet   statusSet = 1<<0 | 1<<1
	terminalSet statusSet = 1<<2 | 1<<3 | 1<<4
	noRef                 = math.MaxInt64
)

// setOf is the set of one state.
func setOf(status TaskStatus) statusSet { return 1 << statusIndex(status) }

// word returns the slots of word w whose records are in a state of set.
func (b *memBlock) word(set statusSet, w int) uint64 {
	var m uint64
	for i := range 5 {
		if set&(1<<i) != 0 {
			m |= b.masks[i][w].Load()
		}
	}
	return m
}

// holds reports whether the block may hold a record in a state of set.
func (b *memBlock) holds(set statusSet) bool {
	for w := range blockWords {
		if b.word(set, w) != 0 {
			return true
		}
	}
	return false
}

// mark sets (or clears) slot k in the mask of status.
func (b *memBlock) mark(status TaskStatus, k uint64, on bool) {
	m := &b.masks[statusIndex(status)][k/64]
	if on {
		m.Or(1 << (k % 64))
		b.group.note(status)
	} else {
		m.And(^(1 << (k % 64)))
	}
}

// refMicros is a lower bound, in microseconds, of a terminal record's
// reference time: CompletedAt, or SubmittedAt when CompletedAt is unset.
func refMicros(info *TaskInfo) int64 {
	t := info.CompletedAt
	if t.IsZero() {
		t = info.SubmittedAt
	}
	return t.UnixMicro() - 1 // UnixMicro truncates towards zero
}

// lowerRef makes minRef at most the reference time of info, a terminal
// record of the block.
func (b *memBlock) lowerRef(info *TaskInfo) {
	ref := refMicros(info)
	for {
		cur := b.minRef.Load()
		if cur <= ref || b.minRef.CompareAndSwap(cur, ref) {
			return
		}
	}
}

// mayExpire reports whether the block may hold a terminal record whose
// reference time is before before.
func (b *memBlock) mayExpire(before time.Time) bool {
	return b.minRef.Load() <= before.UnixMicro()+1 && b.holds(terminalSet)
}

// memIndex is the list of blocks.
type memIndex struct {
	blocks  atomic.Pointer[[]*memBlock] // oldest first
	next    atomic.Uint64               // the next sequence number; written under MemoryStore.order
	emptied atomic.Int64                // blocks that became empty since the last compaction (about)
}

func (x *memIndex) init() {
	x.blocks.Store(new([]*memBlock))
	x.next.Store(1) // 0 is "before the first record"
}

// add gives r the next sequence number and its slot; MemoryStore.order is
// held.
func (x *memIndex) add(r *memRecord) {
	seq := x.next.Load()
	blocks := *x.blocks.Load()
	if len(blocks) == 0 || seq-blocks[len(blocks)-1].base >= blockSize {
		x.grow(seq)
		blocks = *x.blocks.Load()
	}
	b := blocks[len(blocks)-1]
	r.seq, r.blk = seq, b
	b.slots[seq-b.base].Store(r)
	b.mark(r.info.Status, seq-b.base, true)
	if r.info.Status.IsTerminal() {
		b.lowerRef(&r.info)
	}
	x.next.Store(seq + 1)
}

// grow appends a block starting at seq, first dropping the empty blocks
// when they have become many; MemoryStore.order is held.
func (x *memIndex) grow(seq uint64) {
	blocks := *x.blocks.Load()
	if e := x.emptied.Load(); e > 16 && e > int64(len(blocks)/2) {
		kept := make([]*memBlock, 0, len(blocks)-int(e)+16)
		for _, b := range blocks {
			if b.holds(everySet) {
				kept = append(kept, b)
			}
		}
		x.emptied.Store(0)
		blocks = kept
	}
	g := &memGroup{}
	if n := len(blocks); n > 0 && blocks[n-1].group.blocks < groupSize {
		g = blocks[n-1].group
	}
	g.blocks++
	b := &memBlock{base: seq, group: g}
	b.minRef.Store(noRef)
	blocks = append(blocks, b) // in place when it fits: readers hold shorter lengths
	x.blocks.Store(&blocks)
}

// removed takes r out of its slot and masks; r's shard lock is held and r
// has just left the shard's map.
func (x *memIndex) removed(r *memRecord) {
	b := r.blk
	k := r.seq - b.base
	b.slots[k].Store(nil)
	b.mark(r.info.Status, k, false)
	if b.base+blockSize <= x.next.Load() && !b.holds(everySet) {
		x.emptied.Add(1)
	}
}

// moved marks r in its state instead of from; r's shard lock is held and
// r.info is already the new record.
func (x *memIndex) moved(r *memRecord, from TaskStatus) {
	to := r.info.Status
	if from != to {
		k := r.seq - r.blk.base
		r.blk.mark(to, k, true)
		r.blk.mark(from, k, false)
	}
	if to.IsTerminal() {
		r.blk.lowerRef(&r.info)
	}
}

// ascend calls fn with the records in a state of set whose sequence
// numbers are above after, in order, until fn returns false. It reads the
// slots the masks point at, in the blocks that hold any.
func (x *memIndex) ascend(after uint64, set statusSet, fn func(*memRecord) bool) {
	blocks := *x.blocks.Load()
	i := sort.Search(len(blocks), func(i int) bool { return blocks[i].base+blockSize > after+1 })
	for i < len(blocks) {
		// The run of the group's blocks from i on.
		g, start, end := blocks[i].group, i, i
		for end < len(blocks) && blocks[end].group == g {
			end++
		}
		if g.flags.Load()&uint32(set) == 0 {
			i = end
			continue
		}
		found := false
		for ; i < end; i++ {
			b := blocks[i]
			if !b.holds(set) {
				continue
			}
			found = true
			if !b.ascend(after, set, fn) {
				return
			}
		}
		// Every block of a group that is not the newest (it grows no more)
		// glanced at, none holding the states asked for: clear their flags.
		whole := (start == 0 || blocks[start-1].group != g) && after < blocks[start].base
		if whole && !found && end < len(blocks) {
			g.tidy(set, blocks[start:end])
		}
	}
}

// ascend is memIndex.ascend within the block: it reports whether fn never
// returned false.
func (b *memBlock) ascend(after uint64, set statusSet, fn func(*memRecord) bool) bool {
	for w := range blockWords {
		bits := b.word(set, w)
		if lo := b.base + uint64(w)*64; after >= lo { // drop the slots up to after
			if n := after - lo + 1; n >= 64 {
				bits = 0
			} else {
				bits &^= 1<<n - 1
			}
		}
		for bits != 0 {
			k := uint64(w)*64 + uint64(mathbits.TrailingZeros64(bits))
			bits &= bits - 1
			if r := b.slots[k].Load(); r != nil && !fn(r) {
				return false
			}
		}
	}
	return true
}

// descend is ascend newest first: the records below before.
func (x *memIndex) descend(before uint64, set statusSet, fn func(*memRecord) bool) {
	blocks := *x.blocks.Load()
	i := sort.Search(len(blocks), func(i int) bool { return blocks[i].base >= before }) - 1
	for i >= 0 {
		b := blocks[i]
		if b.group.flags.Load()&uint32(set) == 0 { // skip the group's run
			for i >= 0 && blocks[i].group == b.group {
				i--
			}
			continue
		}
		i--
		for w := blockWords - 1; w >= 0; w-- {
			bits := b.word(set, w)
			if lo := b.base + uint64(w)*64; before < lo+64 { // keep the slots below before
				if before <= lo {
					bits = 0
				} else {
					bits &= 1<<(before-lo) - 1
				}
			}
			for bits != 0 {
				top := 63 - mathbits.LeadingZeros64(bits)
				bits &^= 1 << top
				if r := b.slots[uint64(w)*64+uint64(top)].Load(); r != nil && !fn(r) {
					return
				}
			}
		}
	}
}

// each calls fn with the block's records in a state of set, in order,
// until fn returns false, and reports whether fn never did.
func (b *memBlock) each(set statusSet, fn func(*memRecord) bool) bool {
	for w := range blockWords {
		for bits := b.word(set, w); bits != 0; bits &= bits - 1 {
			k := w*64 + mathbits.TrailingZeros64(bits)
			if r := b.slots[k].Load(); r != nil && !fn(r) {
				return false
			}
		}
	}
	return true
}

// eachBlock calls fn with every block, oldest first, until it returns
// false.
func (x *memIndex) eachBlock(fn func(*memBlock) bool) {
	for _, b := range *x.blocks.Load() {
		if !fn(b) {
			return
		}
	}
}

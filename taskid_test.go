package apcore

import (
	"testing"

	"github.com/google/uuid"
)

// BenchmarkTaskID is what the id pool buys over uuid.NewString, which reads
// crypto/rand for every id (unless the process-global uuid.EnableRandPool is
// on, which a library must not switch on for its host program).
func BenchmarkTaskID(b *testing.B) {
	b.Run("pool", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = newTaskID()
		}
	})
	b.Run("uuid.NewString", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sink = uuid.NewString()
		}
	})
}

// Task ids are version 4 UUIDs, all different.
func TestTaskIDIsUUIDv4(t *testing.T) {
	seen := make(map[string]bool)
	for range 5000 {
		id := newTaskID()
		u, err := uuid.Parse(id)
		if err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		if u.Version() != 4 || u.Variant() != uuid.RFC4122 {
			t.Fatalf("%q: version %d variant %v", id, u.Version(), u.Variant())
		}
		if seen[id] {
			t.Fatalf("%q handed out twice", id)
		}
		seen[id] = true
	}
}

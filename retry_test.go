package apcore

import (
	"math"
	"testing"
	"time"
)

// FuzzComputeDelay: for any field values, the delay is never negative,
// never above the cap, never shrinks as the attempt grows, and never panics.
func FuzzComputeDelay(f *testing.F) {
	f.Add(int64(time.Second), 2.0, int64(30*time.Second), 5)
	f.Add(int64(100*time.Millisecond), 1.0, int64(time.Second), 0)
	f.Add(int64(0), 0.0, int64(0), 3)
	f.Add(int64(-5), -3.0, int64(-7), -1)
	f.Add(int64(math.MaxInt64), math.MaxFloat64, int64(math.MaxInt64), math.MaxInt32)
	f.Add(int64(1), math.Inf(1), int64(math.MaxInt64), 1<<40)
	f.Add(int64(1), math.NaN(), int64(10), 2)
	f.Fuzz(func(t *testing.T, delay int64, mult float64, maxDelay int64, attempt int) {
		cfg := RetryConfig{RetryDelay: time.Duration(delay), BackoffMultiplier: mult, MaxRetryDelay: time.Duration(maxDelay)}
		ceiling := max(cfg.withDefaults().MaxRetryDelay, 0)
		d := cfg.ComputeDelay(attempt)
		if d < 0 || d > ceiling {
			t.Fatalf("ComputeDelay(%d) = %v, outside [0, %v] for %+v", attempt, d, ceiling, cfg)
		}
		if attempt < math.MaxInt {
			if next := cfg.ComputeDelay(attempt + 1); next < d {
				t.Fatalf("ComputeDelay shrank from %v to %v at attempt %d for %+v", d, next, attempt, cfg)
			}
		}
	})
}

package apcore

import (
	"errors"
	"math"
	"time"
)

// Retry defaults, from the protocol.
const (
	defaultRetryDelay        = time.Second
	defaultBackoffMultiplier = 2.0
	defaultMaxRetryDelay     = 60 * time.Second
)

// RetryConfig is a task's retry policy, given to Submit with WithRetry.
// Zero fields take the defaults: 1s, 2.0, 60s. MaxRetries 0 = no retry.
//
// After a failed attempt with budget left, the task goes back to pending
// (RetryCount counts the retries taken), holds no concurrency slot while it
// waits ComputeDelay(RetryCount-1), and then queues for a slot again. The
// module is called at most MaxRetries+1 times. Errors wrapped with Permanent,
// and tasks that were cancelled, are never retried.
type RetryConfig struct {
	// MaxRetries is how many times a failed task is run again. 0 disables
	// retry; negative is invalid.
	MaxRetries int
	// RetryDelay is the delay before the first retry. Default 1s.
	RetryDelay time.Duration
	// BackoffMultiplier scales the delay at each further retry. Default 2.0;
	// 1.0 keeps it constant; values below 1, NaN and infinities are invalid.
	BackoffMultiplier float64
	// MaxRetryDelay caps every delay. Default 60s.
	MaxRetryDelay time.Duration
}

// DefaultRetryConfig returns the protocol's defaults: no retries, and 1s,
// 2.0 and 60s for when MaxRetries is raised.
func DefaultRetryConfig() RetryConfig {
	return RetryConfig{
		RetryDelay:        defaultRetryDelay,
		BackoffMultiplier: defaultBackoffMultiplier,
		MaxRetryDelay:     defaultMaxRetryDelay,
	}
}

// withDefaults fills zero fields with the defaults.
func (c RetryConfig) withDefaults() RetryConfig {
	if c.RetryDelay == 0 {
		c.RetryDelay = defaultRetryDelay
	}
	if c.BackoffMultiplier == 0 {
		c.BackoffMultiplier = defaultBackoffMultiplier
	}
	if c.MaxRetryDelay == 0 {
		c.MaxRetryDelay = defaultMaxRetryDelay
	}
	return c
}

// validate reports a field out of range as GENERAL_INVALID_INPUT.
func (c RetryConfig) validate() error {
	switch {
	case c.MaxRetries < 0:
		return invalidf("retry: MaxRetries is %d; it must be 0 or more", c.MaxRetries)
	case c.RetryDelay < 0:
		return invalidf("retry: RetryDelay is %v; it must be 0 (default) or more", c.RetryDelay)
	case c.MaxRetryDelay < 0:
		return invalidf("retry: MaxRetryDelay is %v; it must be 0 (default) or more", c.MaxRetryDelay)
	case math.IsNaN(c.BackoffMultiplier) || math.IsInf(c.BackoffMultiplier, 0):
		return invalidf("retry: BackoffMultiplier is %v; it must be a finite number", c.BackoffMultiplier)
	case c.BackoffMultiplier != 0 && c.BackoffMultiplier < 1:
		return invalidf("retry: BackoffMultiplier is %v; it must be 0 (default) or at least 1", c.BackoffMultiplier)
	}
	return nil
}

// ComputeDelay returns the wait before retry number attempt (0-based):
// min(RetryDelay * BackoffMultiplier^attempt, MaxRetryDelay), with zero fields
// taking their defaults. It never panics and never overflows: a negative
// attempt counts as 0, a negative delay as 0, a multiplier below 1 (or NaN)
// as 1, and the result is never above the cap, so the delay never shrinks as
// attempt grows.
func (c RetryConfig) ComputeDelay(attempt int) time.Duration {
	c = c.withDefaults()
	base, ceiling := max(c.RetryDelay, 0), max(c.MaxRetryDelay, 0)
	if base >= ceiling {
		return ceiling
	}
	mult := c.BackoffMultiplier
	if !(mult >= 1) { // also catches NaN
		mult = 1
	}
	attempt = max(attempt, 0)
	d := float64(base) * math.Pow(mult, float64(attempt))
	if !(d < float64(ceiling)) { // also catches +Inf and NaN
		return ceiling
	}
	return time.Duration(d)
}

// permanentError marks an error as not worth retrying.
type permanentError struct{ err error }

func (p *permanentError) Error() string { return p.err.Error() }
func (p *permanentError) Unwrap() error { return p.err }

// Permanent marks a module's error as not worth retrying: the task fails at
// once whatever its retry budget. errors.Is/As still see the wrapped error.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// isPermanent reports whether err's chain holds a Permanent mark.
func isPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

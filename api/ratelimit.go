package api

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiterIdle is how long an unused bucket is kept: after that it is full
// again anyway, so forgetting it changes nothing.
const limiterIdle = 10 * time.Minute

// limiters holds one token bucket per caller (golang.org/x/time/rate). It is
// safe for concurrent use; idle buckets are swept so that the map stays as
// small as the set of recent callers.
type limiters struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

// newLimiters returns per-caller buckets of limit requests per second with
// the given burst; a negative limit means no limit.
func newLimiters(limit float64, burst int) *limiters {
	l := &limiters{limit: rate.Limit(limit), burst: burst, buckets: make(map[string]*bucket)}
	if limit < 0 {
		l.limit = rate.Inf
	}
	return l
}

// allow takes one token from key's bucket. When there is none it returns
// false and how long until there is one; nothing is taken then.
func (l *limiters) allow(key string, now time.Time) (bool, time.Duration) {
	if l.limit == rate.Inf {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.lastSweep) > limiterIdle {
		for k, b := range l.buckets {
			if now.Sub(b.used) > limiterIdle {
				delete(l.buckets, k)
			}
		}
		l.lastSweep = now
	}
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.used = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// rateLimitError is a call refused because its caller's bucket is empty.
type rateLimitError struct{ retryAfter time.Duration }

func (e *rateLimitError) Error() string { return "api: rate limit exceeded" }

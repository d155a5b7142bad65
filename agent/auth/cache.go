package auth

import (
	"sync"
	"time"
)

// ttlCache remembers answers (TokenReview, SubjectAccessReview, user upserts) for a
// short time so a burst of requests from one client costs one API call, while a
// revoked grant or token stops working within seconds.
type ttlCache[V any] struct {
	mu  sync.Mutex
	max int
	now func() time.Time
	m   map[string]ttlEntry[V]
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[V any](max int) *ttlCache[V] {
	return &ttlCache[V]{max: max, now: time.Now, m: map[string]ttlEntry[V]{}}
}

func (c *ttlCache[V]) get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if !ok || !c.now().Before(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (c *ttlCache[V]) put(key string, v V, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if len(c.m) >= c.max {
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
		// Still full of live entries: dropping them all only costs extra API calls,
		// while growing without bound would let a flood of distinct tokens exhaust memory.
		if len(c.m) >= c.max {
			clear(c.m)
		}
	}
	c.m[key] = ttlEntry[V]{v: v, expires: now.Add(ttl)}
}

package sessions

import "time"

// After this process creates a session's pod, the pod cache lags the API server by the
// watch's delay: a reconcile that runs in between (Create enqueues the session, and the
// Secret's own watch event wakes it too) would find no pod and create it again, which the
// API server refuses with AlreadyExists. Under a burst of creates that was a quarter of
// all pod POSTs, each a round trip through the session's lock on an API server that is
// already the bottleneck. So, like the ReplicaSet controller's expectations, the
// controller remembers the pods it created until the cache shows them, and the
// reconciler does not recreate a pod it is still expecting.
//
// Only a pod this process saw the API server create, while leading, is expected, and
// only for podExpectWindow: a pod deleted before the cache saw it still arrives as an
// add and a delete on the watch, and should the watch lose both, the window runs out and the next reconcile (woken by enqueueAfter) creates the pod again.
// Nothing of this is stored: a restarted agent expects nothing and repairs as before.
const podExpectWindow = 15 * time.Second

// expectPod records that the pod of session id exists on the API server but may not be
// in the cache yet.
func (c *Controller) expectPod(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.queue == nil {
		return // not leading: this replica does not reconcile, and would never drop it
	}
	c.expected[id] = c.now()
}

// podExpected reports how much longer the pod of id is expected (0: not expected, or
// the window ran out, and the expectation is dropped).
func (c *Controller) podExpected(id string) time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.expected[id]
	if !ok {
		return 0
	}
	left := podExpectWindow - c.now().Sub(at)
	if left <= 0 {
		delete(c.expected, id)
		return 0
	}
	return left
}

// observedPod drops the expectation for id: the cache has shown its pod, or the pod is
// being deleted on purpose.
func (c *Controller) observedPod(id string) {
	c.mu.Lock()
	delete(c.expected, id)
	c.mu.Unlock()
}

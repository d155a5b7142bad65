package sessions

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// reconcileLoop runs the workers and the periodic sweep until ctx ends.
func (c *Controller) reconcileLoop(ctx context.Context) {
	q := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, time.Minute),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "sessions"})
	c.mu.Lock()
	c.queue = q
	// A new leadership term re-evaluates every ready hook.
	c.hookState = map[string]hookMark{}
	c.mu.Unlock()

	var wg sync.WaitGroup
	for i := 0; i < c.cfg.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.processNext(ctx, q) {
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.poolLoop(ctx) // with size 0 it deletes what a previous configuration left
	}()
	c.mu.Lock()
	tasks := slices.Clone(c.leaderTasks)
	c.mu.Unlock()
	for _, task := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			task(ctx)
		}()
	}
	c.sweep(ctx)
	t := time.NewTicker(c.cfg.ReconcileInterval)
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-t.C:
			c.sweep(ctx)
		}
	}
	t.Stop()
	q.ShutDownWithDrain()
	wg.Wait()
	c.mu.Lock()
	if c.queue == q {
		c.queue = nil
	}
	c.mu.Unlock()
}

func (c *Controller) processNext(ctx context.Context, q workqueue.TypedRateLimitingInterface[string]) bool {
	id, shutdown := q.Get()
	if shutdown {
		return false
	}
	defer q.Done(id)
	if ctx.Err() != nil {
		return true
	}
	start := time.Now()
	err := c.reconcile(ctx, id)
	c.metrics.reconcile.WithLabelValues("session").Observe(time.Since(start).Seconds())
	if err != nil {
		c.log.Warn("reconcile session failed; retrying", "session", id, "error", err)
		q.AddRateLimited(id)
		return true
	}
	q.Forget(id)
	return true
}

func (c *Controller) enqueue(id string) { c.enqueueAfter(id, 0) }

func (c *Controller) enqueueAfter(id string, d time.Duration) {
	c.mu.Lock()
	q := c.queue
	c.mu.Unlock()
	if q == nil {
		return // not leading: the leader's watches see the same change
	}
	if d <= 0 {
		q.Add(id)
	} else {
		q.AddAfter(id, d)
	}
}

func (c *Controller) enqueueObject(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	m, err := metaAccessor(obj)
	if err != nil {
		return
	}
	if _, pool := m.GetLabels()[LabelPoolState]; pool {
		c.kickPool() // a pool pod was claimed, became ready or went away
		if isWarm(m) {
			return // no session yet: the pool loop looks after it
		}
	}
	if id := m.GetLabels()[apiv1.LabelSessionID]; id != "" {
		c.enqueue(id)
	}
}

func metaAccessor(obj any) (metav1.Object, error) {
	m, ok := obj.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	return m, nil
}

// sweep enqueues every session and every object whose session may be gone: the full
// pass that catches what watches cannot (timeouts, a crash, a missed event).
func (c *Controller) sweep(ctx context.Context) {
	start := time.Now()
	defer func() { c.metrics.reconcile.WithLabelValues("full").Observe(time.Since(start).Seconds()) }()
	// Objects first, then rows: an object created after this snapshot has a row by
	// then (rows are written first), so reconcile never mistakes it for an orphan.
	objIDs := map[string]bool{}
	c.forEachObject(func(m metav1.Object) {
		if !isWarm(m) {
			objIDs[m.GetLabels()[apiv1.LabelSessionID]] = true
		}
	})
	known := map[string]bool{}
	active := map[string]bool{}
	f := store.SessionFilter{Limit: 1000}
	for {
		page, err := c.st.ListSessions(ctx, f)
		if err != nil {
			c.log.Warn("list sessions for the sweep failed", "error", err)
			return
		}
		for _, s := range page.Items {
			known[s.ID] = true
			active[s.ID] = s.State.Active()
			if c.needsWork(s) {
				c.enqueue(s.ID)
			}
		}
		if page.Continue == "" {
			break
		}
		f.Continue = page.Continue
	}
	for id := range objIDs {
		if id != "" && !known[id] {
			c.enqueue(id)
		}
	}
	if c.cfg.LiteLLM != nil {
		// LiteLLM keys still live for sessions that are gone or not running: a stop or
		// delete could not reach LiteLLM, or a crash came between a key and its session.
		live, err := c.st.ListModelKeys(ctx, store.ModelKeyFilter{Live: true})
		if err != nil {
			c.log.Warn("list LiteLLM keys for the sweep failed", "error", err)
			return
		}
		for _, k := range live {
			if !active[k.SessionID] {
				c.enqueue(k.SessionID)
			}
		}
	}
}

// needsWork is a cheap filter for the sweep: with thousands of quiet sessions, only
// those whose pod, deadlines or state disagree are reconciled.
func (c *Controller) needsWork(s *store.Session) bool {
	switch s.State {
	case apiv1.StateStopped, apiv1.StateFailed:
		if d, ok := c.deadline(s); ok && !c.now().Before(d) {
			return true
		}
		_, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID))
		return err == nil
	case apiv1.StatePending, apiv1.StateStarting, apiv1.StateRunning:
		pod, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID))
		if err != nil || pod.DeletionTimestamp != nil {
			return true
		}
		o := observe(pod, s.State)
		if o.State != s.State || o.Reason != s.Reason || (o.Message != "" && o.Message != s.Message) {
			return true
		}
		now := c.now()
		if d, ok := c.deadline(s); ok && !now.Before(d) {
			return true
		}
		if s.State == apiv1.StateRunning && s.Prompt != "" && !s.PromptSent {
			c.mu.Lock()
			h := c.hookState[s.ID]
			c.mu.Unlock()
			if !h.fired {
				return true
			}
		}
		return c.appTokenDueCached(s.ID)
	}
	return true
}

// reconcile converges one session (or its leftovers) to the stored intent.
func (c *Controller) reconcile(ctx context.Context, id string) error {
	unlock, err := c.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	// Snapshot cached objects before reading the row; see sweep.
	var objs []metav1.Object
	c.forEachSessionObject(id, func(m metav1.Object) { objs = append(objs, m) })
	s, err := c.st.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		if err := c.deleteOrphans(ctx, id, objs); err != nil {
			return err
		}
		return c.forgetKeys(ctx, id)
	}
	if err != nil {
		return fmt.Errorf("read session %s: %w", id, err)
	}
	if s, err = c.expire(ctx, s); err != nil {
		return err
	}
	switch s.State {
	case apiv1.StateDeleting:
		done, err := c.finishDelete(ctx, s)
		if err == nil && !done {
			c.enqueueAfter(id, 5*time.Second) // the watches normally wake us sooner
		}
		return err
	case apiv1.StateStopping:
		_, err := c.finishStop(ctx, s)
		return err
	case apiv1.StateStopped, apiv1.StateFailed:
		c.leftRunning(id)
		c.enqueueAtDeadline(s)
		// The pod first: a LiteLLM that cannot be reached must not keep a stopped
		// session running.
		if pod, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil && pod.DeletionTimestamp == nil {
			if _, err := c.deletePod(ctx, id); err != nil {
				return err
			}
		}
		if err := c.dropGitCredentials(ctx, id); err != nil {
			return err
		}
		if err := c.revokeKeys(ctx, id); err != nil {
			c.log.Warn("delete the LiteLLM key of a stopped session failed; retrying", "session", id, "error", err)
			return err // the queue retries with backoff
		}
		return nil
	}
	return c.reconcileActive(ctx, s)
}

// reconcileActive converges a Pending, Starting or Running session: the idle timer, its
// pod (recreated when gone), the state the pod reports and the start timeout.
func (c *Controller) reconcileActive(ctx context.Context, s *store.Session) error {
	now := c.now()
	s, stopped, err := c.stopIdle(ctx, s, now)
	if err != nil || stopped {
		return err
	}

	pod, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read pod of session %s from cache: %w", s.ID, err)
	}
	if pod != nil && pod.DeletionTimestamp != nil {
		return nil // deleted from outside; its delete event brings us back
	}
	if pod == nil {
		if left := c.podExpected(s.ID); left > 0 {
			// Created moments ago and not in the cache yet: its watch event brings
			// us back; the retry covers a watch that lost it (see expect.go).
			c.enqueueAfter(s.ID, left)
			return nil
		}
		return c.recreate(ctx, s)
	}
	c.observedPod(s.ID)
	if pod.Labels[apiv1.LabelSessionID] != s.ID {
		return fmt.Errorf("pod %s does not belong to session %s (label %s=%q): delete it", pod.Name, s.ID, apiv1.LabelSessionID, pod.Labels[apiv1.LabelSessionID])
	}

	o := c.startTimeout(s, c.gateRunning(s, pod, observe(pod, s.State)), now)
	if o.State != s.State || o.Reason != s.Reason || o.Message != s.Message {
		prev := s.State
		fresh, changed, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
			if x.State != s.State || (x.State == o.State && x.Reason == o.Reason && x.Message == o.Message) {
				return false, nil
			}
			if o.State == apiv1.StateRunning && x.State != apiv1.StateRunning && x.LastActivityAt.Before(now) {
				// Nobody could use it while it started: its idle timer counts from now.
				x.LastActivityAt, x.LastActivitySource = now.UTC(), ActivityReady
			}
			x.State, x.Reason, x.Message = o.State, o.Reason, o.Message
			return true, nil
		})
		if err != nil {
			return err
		}
		s = fresh
		if changed {
			failpoint.Hit(opReconcile, "observed", s.ID)
			c.transitioned(ctx, s, prev, pod)
		}
	}
	if s.State == apiv1.StateFailed {
		if _, err := c.deletePod(ctx, s.ID); err != nil {
			return err
		}
		return c.dropGitCredentials(ctx, s.ID)
	}
	if s.State == apiv1.StateRunning {
		c.maybeFireHook(s, false)
	} else {
		c.leftRunning(s.ID)
	}
	c.enqueueAtDeadline(s)
	return c.refreshAppToken(ctx, s)
}

// recreate brings back the pod of a session that should run.
func (c *Controller) recreate(ctx context.Context, s *store.Session) error {
	if s.State == apiv1.StateRunning || s.State == apiv1.StateStarting {
		// It had a pod: something outside deleted it (a node drain, kubectl delete).
		now := c.now().UTC()
		fresh, changed, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
			if x.State != s.State {
				return false, nil
			}
			x.State, x.Reason, x.Message = apiv1.StatePending, ReasonPodRecreated, "the session pod disappeared; recreating it"
			x.StartedAt = &now
			return true, nil
		})
		if err != nil {
			return err
		}
		if changed {
			c.log.Info("session pod disappeared; recreating it", "session", s.ID)
			c.event(fresh, corev1.EventTypeWarning, ReasonPodRecreated, "Session pod disappeared; recreating it")
			c.leftRunning(s.ID)
		}
		s = fresh
		if !s.State.Active() {
			return nil
		}
	}
	_, err := c.launch(ctx, s, opRecreate, "")
	return err
}

// transitioned reacts to a state change the pod caused: metrics, events, hooks.
func (c *Controller) transitioned(ctx context.Context, s *store.Session, prev apiv1.SessionState, pod *corev1.Pod) {
	c.log.Info("session state changed", "session", s.ID, "from", prev, "to", s.State, "reason", s.Reason)
	switch s.State {
	case apiv1.StateRunning:
		if prev == apiv1.StateRunning {
			// Only the reason changed (a readiness lapse began or ended): the session
			// never left Running, so nothing that marks its start runs again.
			if s.Reason == ReasonNotAnswering {
				c.recorder.Event(pod, corev1.EventTypeWarning, ReasonNotAnswering, s.Message)
			}
			return
		}
		if s.StartedAt != nil {
			c.metrics.podStart.Observe(c.now().Sub(*s.StartedAt).Seconds())
		}
		c.recorder.Event(pod, corev1.EventTypeNormal, "SessionRunning", "OpenCode is ready")
		c.clearHealth(s.ID, "") // only the way into Running is gated
		c.maybeFireHook(s, true)
	case apiv1.StateFailed:
		c.recorder.Event(pod, corev1.EventTypeWarning, orText(s.Reason, "Failed"), "Session failed: "+s.Message)
	}
}

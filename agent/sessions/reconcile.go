package sessions

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// launch makes sure the Secret, the PVC (persistent sessions) and the Pod of s exist;
// op (create, start, recreate) names its failpoints. Every step tolerates
// AlreadyExists, so it is safe to repeat after a crash. A permanent failure marks the
// session Failed (removing the Secret and PVC on first creation, when they hold
// nothing worth keeping) and returns nil; a transient one returns the error for a
// retry, and marks the session Failed after MaxCreateAttempts in a row. It returns the
// session as last written.
func (c *Controller) launch(ctx context.Context, s *store.Session, op string) (*store.Session, error) {
	cleanup := op == opCreate
	// The CA bundle first: when it is missing nothing is created, so a failed Create
	// leaves only the Failed row that names the ConfigMap.
	err := c.checkCABundle(ctx)
	if err == nil {
		err = c.ensureSecret(ctx, s)
		failpoint.Hit(op, "secret", s.ID)
	}
	if err == nil && s.Persistent {
		err = c.ensurePVC(ctx, s)
		failpoint.Hit(op, "pvc", s.ID)
	}
	created := false
	if err == nil {
		created, err = c.ensurePod(ctx, s)
		failpoint.Hit(op, "pod", s.ID)
	}
	if err == nil {
		c.forgetFailures(s.ID)
		if created {
			c.event(s, corev1.EventTypeNormal, "Created", fmt.Sprintf("Created session pod (image %s)", imageOf(s, c.cfg)))
		}
		return s, nil
	}

	outage := unreachable(err)
	c.mu.Lock()
	if !outage {
		c.failures[s.ID]++
	}
	attempts := c.failures[s.ID]
	c.mu.Unlock()
	if !permanent(err) && (outage || attempts < c.cfg.MaxCreateAttempts) {
		msg := fmt.Sprintf("creating the session's objects failed (attempt %d of %d), retrying: %s", attempts, c.cfg.MaxCreateAttempts, apiMessage(err))
		if outage {
			msg = "the Kubernetes API cannot be reached, retrying: " + apiMessage(err)
		}
		if fresh, _, uerr := c.update(ctx, s.ID, func(s *store.Session) (bool, error) {
			if !s.State.Active() || s.Message == msg {
				return false, nil
			}
			s.Message = msg
			return true, nil
		}); uerr == nil {
			s = fresh
		}
		return s, err
	}

	reason := ReasonCreateFailed
	if permanent(err) {
		reason = ReasonPodRejected
		if pe := (*permanentError)(nil); errors.As(err, &pe) && pe.reason != "" {
			reason = pe.reason
		}
	}
	c.log.Error("session objects cannot be created; marking the session failed", "session", s.ID, "reason", reason, "error", err)
	if cleanup {
		// Nothing ran yet: leave nothing behind but the Failed row that explains why.
		if _, derr := c.deleteObjects(ctx, op, s.ID, true); derr != nil {
			c.log.Warn("clean up after failed create failed; the reconciler will retry", "session", s.ID, "error", derr)
		}
	} else if _, derr := c.deletePod(ctx, s.ID); derr != nil {
		c.log.Warn("delete pod after failed start failed; the reconciler will retry", "session", s.ID, "error", derr)
	}
	fresh, _, uerr := c.update(ctx, s.ID, func(s *store.Session) (bool, error) {
		if !s.State.Active() {
			return false, nil
		}
		s.State, s.Reason, s.Message = apiv1.StateFailed, reason, apiMessage(err)
		return true, nil
	})
	if uerr != nil {
		return s, uerr
	}
	c.forgetFailures(s.ID)
	c.event(fresh, corev1.EventTypeWarning, reason, apiMessage(err))
	return fresh, nil
}

func imageOf(s *store.Session, cfg Config) string {
	if s.Image != "" {
		return s.Image
	}
	return cfg.DataPlaneImage
}

// checkCABundle makes sure the CA bundle ConfigMap the pod mounts exists in the session
// namespace and holds a certificate under its key. Without the check the kubelet keeps
// the pod in ContainerCreating (FailedMount) until StartTimeout, with the cause only in
// an Event. A missing bundle is treated as permanent: the session fails at once and
// `start` retries it once the ConfigMap is there.
func (c *Controller) checkCABundle(ctx context.Context) error {
	name, key, ns := c.cfg.CABundleConfigMap, c.cfg.CABundleKey, c.cfg.Namespace
	if name == "" {
		return nil
	}
	missing := func(format string, args ...any) error {
		return &permanentError{err: fmt.Errorf(format, args...), reason: ReasonCABundleMissing}
	}
	cm, err := c.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return missing("the sessions' CA bundle ConfigMap %q does not exist in the session namespace %q: create it there "+
			"with the PEM bundle under key %q, or fix the chart value sessions.caBundle.configMapName (agent flag --session-ca-configmap)", name, ns, key)
	case apierrors.IsForbidden(err):
		return missing("the agent may not read the sessions' CA bundle ConfigMap %q in namespace %q: grant its service account get on that "+
			"ConfigMap (the chart does when sessions.caBundle.configMapName is set): %s", name, ns, apiMessage(err))
	case err != nil:
		return fmt.Errorf("read the sessions' CA bundle ConfigMap %s/%s: %w", ns, name, err)
	}
	pem, ok := cm.Data[key]
	if !ok {
		if b, inBinary := cm.BinaryData[key]; inBinary {
			pem, ok = string(b), true
		}
	}
	if !ok {
		return missing("the sessions' CA bundle ConfigMap %q in namespace %q has no key %q: put the PEM bundle there, "+
			"or set the chart value sessions.caBundle.key (agent flag --session-ca-key) to the key that holds it", name, ns, key)
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(pem)) {
		return missing("key %q of the sessions' CA bundle ConfigMap %q in namespace %q holds no PEM certificate: "+
			"it must be the complete bundle of CAs sessions trust (-----BEGIN CERTIFICATE----- blocks)", key, name, ns)
	}
	return nil
}

func (c *Controller) ensureSecret(ctx context.Context, s *store.Session) error {
	if cur, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID)); err == nil && cur.DeletionTimestamp == nil &&
		len(cur.Data[SecretKeyPassword]) > 0 && (c.cfg.LiteLLMAPIKey == "" || string(cur.Data[SecretKeyLiteLLM]) == c.cfg.LiteLLMAPIKey) {
		return nil // the common restart case, without an API call
	}
	secrets := c.kube.CoreV1().Secrets(c.cfg.Namespace)
	_, err := secrets.Create(ctx, c.buildSecret(s, newPassword()), metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create secret %s: %w", SecretName(s.ID), err)
		}
		return nil
	}
	// It exists (a restart, or a retry after a crash): keep the password, but repair a
	// missing one and follow a changed gateway key.
	cur, err := secrets.Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("read secret %s: %w", SecretName(s.ID), err)
	}
	want := cur.DeepCopy()
	if want.Data == nil {
		want.Data = map[string][]byte{}
	}
	changed := false
	if len(want.Data[SecretKeyPassword]) == 0 {
		want.Data[SecretKeyPassword] = []byte(newPassword())
		changed = true
	}
	if c.cfg.LiteLLMAPIKey != "" && string(want.Data[SecretKeyLiteLLM]) != c.cfg.LiteLLMAPIKey {
		want.Data[SecretKeyLiteLLM] = []byte(c.cfg.LiteLLMAPIKey)
		changed = true
	}
	if !changed {
		return nil
	}
	if _, err := secrets.Update(ctx, want, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update secret %s: %w", SecretName(s.ID), err)
	}
	return nil
}

func (c *Controller) ensurePVC(ctx context.Context, s *store.Session) error {
	if cur, err := c.pvcLister.PersistentVolumeClaims(c.cfg.Namespace).Get(PVCName(s.ID)); err == nil && cur.DeletionTimestamp == nil {
		return nil
	}
	pvc, err := c.buildPVC(s)
	if err != nil {
		return &permanentError{err: err}
	}
	_, err = c.kube.CoreV1().PersistentVolumeClaims(c.cfg.Namespace).Create(ctx, pvc, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create persistent volume claim %s: %w", PVCName(s.ID), err)
	}
	return nil
}

func (c *Controller) ensurePod(ctx context.Context, s *store.Session) (bool, error) {
	pod, err := c.buildPod(s)
	if err != nil {
		return false, &permanentError{err: err}
	}
	_, err = c.kube.CoreV1().Pods(c.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case err == nil:
		c.metrics.creates.WithLabelValues("created").Inc()
		return true, nil
	case apierrors.IsAlreadyExists(err):
		c.metrics.creates.WithLabelValues("exists").Inc()
		return false, nil
	default:
		c.metrics.creates.WithLabelValues("error").Inc()
		return false, fmt.Errorf("create pod %s: %w", PodName(s.ID), err)
	}
}

// deletePod deletes the session's pod; it reports whether the pod is gone.
func (c *Controller) deletePod(ctx context.Context, id string) (bool, error) {
	err := c.kube.CoreV1().Pods(c.cfg.Namespace).Delete(ctx, PodName(id), metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("delete pod %s: %w", PodName(id), err)
	}
	// A pod that never reached a node goes at once; a running one terminates gracefully
	// and its delete event brings the reconciler back.
	_, err = c.kube.CoreV1().Pods(c.cfg.Namespace).Get(ctx, PodName(id), metav1.GetOptions{})
	return apierrors.IsNotFound(err), nil
}

// deleteObjects deletes the pod, the Secret and (withPVC) the PVC of a session; it
// reports whether all of them are gone (pods terminate gracefully and PVCs wait for
// their pod, so that can take another pass). op names its failpoints.
func (c *Controller) deleteObjects(ctx context.Context, op, id string, withPVC bool) (bool, error) {
	gone, err := c.deletePod(ctx, id)
	if err != nil {
		return false, err
	}
	failpoint.Hit(op, "pod-deleted", id)
	// Secrets have no graceful deletion: a successful delete means gone.
	err = c.kube.CoreV1().Secrets(c.cfg.Namespace).Delete(ctx, SecretName(id), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return false, fmt.Errorf("delete secret %s: %w", SecretName(id), err)
	}
	failpoint.Hit(op, "secret-deleted", id)
	if withPVC {
		pvcs := c.kube.CoreV1().PersistentVolumeClaims(c.cfg.Namespace)
		err = pvcs.Delete(ctx, PVCName(id), metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("delete persistent volume claim %s: %w", PVCName(id), err)
		}
		failpoint.Hit(op, "pvc-deleted", id)
		if err == nil {
			// The pvc-protection finalizer keeps it until its pod is gone.
			_, err = pvcs.Get(ctx, PVCName(id), metav1.GetOptions{})
			gone = gone && apierrors.IsNotFound(err)
		}
	}
	return gone, nil
}

// finishStop deletes the pod of a Stopping session and marks it Stopped once it is gone.
func (c *Controller) finishStop(ctx context.Context, s *store.Session) (*store.Session, error) {
	gone, err := c.deletePod(ctx, s.ID)
	if err != nil || !gone {
		return s, err
	}
	failpoint.Hit(opStop, "pod-deleted", s.ID)
	now := c.now().UTC()
	fresh, changed, err := c.update(ctx, s.ID, func(s *store.Session) (bool, error) {
		if s.State != apiv1.StateStopping {
			return false, nil
		}
		s.State, s.StoppedAt = apiv1.StateStopped, &now
		return true, nil
	})
	if err != nil {
		return s, err
	}
	if changed {
		failpoint.Hit(opStop, "stopped", s.ID)
		c.log.Info("session stopped", "session", s.ID, "reason", fresh.Reason)
		c.event(fresh, corev1.EventTypeNormal, "Stopped", "Session stopped ("+fresh.Reason+")")
		c.leftRunning(s.ID)
	}
	return fresh, nil
}

// finishDelete removes every object of a Deleting session, then its row.
// It reports whether the row is gone.
func (c *Controller) finishDelete(ctx context.Context, s *store.Session) (bool, error) {
	gone, err := c.deleteObjects(ctx, opDelete, s.ID, true)
	if err != nil || !gone {
		return false, err
	}
	if err := c.st.DeleteSession(ctx, s.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("delete session %s: %w", s.ID, err)
	}
	failpoint.Hit(opDelete, "row-deleted", s.ID)
	c.log.Info("session deleted", "session", s.ID, "reason", s.Reason)
	c.event(s, corev1.EventTypeNormal, "Deleted", "Session deleted ("+s.Reason+")")
	c.forget(s.ID)
	return true, nil
}

// forget drops in-memory state of a session that no longer exists.
func (c *Controller) forget(id string) {
	c.mu.Lock()
	delete(c.failures, id)
	delete(c.touched, id)
	delete(c.hookState, id)
	delete(c.health, id)
	c.mu.Unlock()
}

// --- the reconciler -------------------------------------------------------------

func (c *Controller) runElected(ctx context.Context) error {
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: c.cfg.LeaseNamespace, Name: c.cfg.LeaseName},
		Client:     c.kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: c.cfg.Identity},
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock:            lock,
			LeaseDuration:   c.cfg.LeaseDuration,
			RenewDeadline:   c.cfg.RenewDeadline,
			RetryPeriod:     c.cfg.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            c.cfg.LeaseName,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(lctx context.Context) {
					c.log.Info("became the reconciling leader", "identity", c.cfg.Identity)
					c.reconcileLoop(lctx)
				},
				OnStoppedLeading: func() {
					c.log.Info("stopped leading", "identity", c.cfg.Identity)
				},
				OnNewLeader: func(id string) {
					if id != c.cfg.Identity {
						c.log.Info("another replica reconciles", "leader", id)
					}
				},
			},
		})
		if err != nil {
			return fmt.Errorf("leader election: %w", err)
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends; campaign again
	}
	return nil
}

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
	c.forEachObject(func(m metav1.Object) { objIDs[m.GetLabels()[apiv1.LabelSessionID]] = true })
	known := map[string]bool{}
	f := store.SessionFilter{Limit: 1000}
	for {
		page, err := c.st.ListSessions(ctx, f)
		if err != nil {
			c.log.Warn("list sessions for the sweep failed", "error", err)
			return
		}
		for _, s := range page.Items {
			known[s.ID] = true
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
		o := observe(pod)
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
			return !h.fired
		}
		return false
	}
	return true
}

func (c *Controller) forEachObject(f func(metav1.Object)) {
	sel := labelsEverything()
	if pods, err := c.podLister.Pods(c.cfg.Namespace).List(sel); err == nil {
		for _, p := range pods {
			f(p)
		}
	}
	if secrets, err := c.secretLister.Secrets(c.cfg.Namespace).List(sel); err == nil {
		for _, s := range secrets {
			f(s)
		}
	}
	if pvcs, err := c.pvcLister.PersistentVolumeClaims(c.cfg.Namespace).List(sel); err == nil {
		for _, p := range pvcs {
			f(p)
		}
	}
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
		return c.deleteOrphans(ctx, id, objs)
	}
	if err != nil {
		return fmt.Errorf("read session %s: %w", id, err)
	}
	if s.State != apiv1.StateDeleting && s.TTL > 0 && !c.now().Before(s.CreatedAt.Add(s.TTL)) {
		// The TTL applies whatever the session is doing, stopped ones included.
		ds, err := c.markDeleting(ctx, s.ID, ReasonTTLExpired, fmt.Sprintf("the session reached its time to live of %s", s.TTL))
		if err != nil {
			return err
		}
		s = ds
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
		if d, ok := c.deadline(s); ok {
			c.enqueueAfter(id, d.Sub(c.now())+100*time.Millisecond)
		}
		if pod, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil && pod.DeletionTimestamp == nil {
			_, err := c.deletePod(ctx, id)
			return err
		}
		return nil
	}
	return c.reconcileActive(ctx, s)
}

func (c *Controller) forEachSessionObject(id string, f func(metav1.Object)) {
	if p, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil {
		f(p)
	}
	if s, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(id)); err == nil {
		f(s)
	}
	if p, err := c.pvcLister.PersistentVolumeClaims(c.cfg.Namespace).Get(PVCName(id)); err == nil {
		f(p)
	}
}

// deleteOrphans removes objects of this release whose session row does not exist. The
// UID precondition makes sure a newer object with the same name is never hit.
func (c *Controller) deleteOrphans(ctx context.Context, id string, objs []metav1.Object) error {
	c.forget(id)
	for _, m := range objs {
		if m.GetDeletionTimestamp() != nil || m.GetLabels()[apiv1.LabelSessionID] != id {
			continue
		}
		uid := m.GetUID()
		opts := metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}
		var err error
		kind := ""
		switch m.(type) {
		case *corev1.Pod:
			kind, err = "pod", c.kube.CoreV1().Pods(c.cfg.Namespace).Delete(ctx, m.GetName(), opts)
		case *corev1.Secret:
			kind, err = "secret", c.kube.CoreV1().Secrets(c.cfg.Namespace).Delete(ctx, m.GetName(), opts)
		case *corev1.PersistentVolumeClaim:
			kind, err = "persistentvolumeclaim", c.kube.CoreV1().PersistentVolumeClaims(c.cfg.Namespace).Delete(ctx, m.GetName(), opts)
		}
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete orphaned %s %s: %w", kind, m.GetName(), err)
		}
		if err == nil {
			c.log.Info("deleted orphaned session object", "kind", kind, "name", m.GetName(), "session", id)
		}
	}
	return nil
}

// deadline is the next time a timer (idle, TTL, start timeout) acts on s.
func (c *Controller) deadline(s *store.Session) (time.Time, bool) {
	var d time.Time
	set := func(t time.Time) {
		if d.IsZero() || t.Before(d) {
			d = t
		}
	}
	if s.TTL > 0 {
		set(s.CreatedAt.Add(s.TTL))
	}
	if s.State == apiv1.StateRunning && s.IdleTimeout > 0 {
		set(s.LastActivityAt.Add(s.IdleTimeout))
	}
	if (s.State == apiv1.StatePending || s.State == apiv1.StateStarting) && s.StartedAt != nil {
		set(s.StartedAt.Add(c.cfg.StartTimeout))
	}
	return d, !d.IsZero()
}

func (c *Controller) reconcileActive(ctx context.Context, s *store.Session) error {
	now := c.now()
	if s.State == apiv1.StateRunning && s.IdleTimeout > 0 && !now.Before(s.LastActivityAt.Add(s.IdleTimeout)) {
		msg := fmt.Sprintf("no activity for %s (last: %s at %s)", s.IdleTimeout, orText(s.LastActivitySource, "unknown"), s.LastActivityAt.UTC().Format(time.RFC3339))
		ss, _, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
			// Activity may have arrived since s was read.
			if x.State != apiv1.StateRunning || now.Before(x.LastActivityAt.Add(x.IdleTimeout)) {
				return false, nil
			}
			x.State, x.Reason, x.Message = apiv1.StateStopping, ReasonIdleTimeout, msg
			return true, nil
		})
		if err != nil {
			return err
		}
		if ss.State == apiv1.StateStopping {
			c.log.Info("stopping idle session", "session", s.ID, "idle_timeout", s.IdleTimeout)
			c.event(ss, corev1.EventTypeNormal, ReasonIdleTimeout, "Stopping session: "+msg)
			_, err = c.finishStop(ctx, ss)
			return err
		}
		s = ss
	}

	pod, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID))
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("read pod of session %s from cache: %w", s.ID, err)
	}
	if pod != nil && pod.DeletionTimestamp != nil {
		return nil // deleted from outside; its delete event brings us back
	}
	if pod == nil {
		return c.recreate(ctx, s)
	}
	if pod.Labels[apiv1.LabelSessionID] != s.ID {
		return fmt.Errorf("pod %s does not belong to session %s (label %s=%q): delete it", pod.Name, s.ID, apiv1.LabelSessionID, pod.Labels[apiv1.LabelSessionID])
	}

	o := c.gateRunning(s, pod, observe(pod))
	if (o.State == apiv1.StatePending || o.State == apiv1.StateStarting) && s.StartedAt != nil && !now.Before(s.StartedAt.Add(c.cfg.StartTimeout)) {
		msg := fmt.Sprintf("the pod did not become ready within %s", c.cfg.StartTimeout)
		switch {
		case o.Reason == ReasonOpenCodeStarting:
			msg = fmt.Sprintf("the pod is ready but OpenCode did not answer on port %d within %s: see the log of container %s", apiv1.OpenCodePort, c.cfg.StartTimeout, ContainerName)
		case o.Reason != "":
			msg += fmt.Sprintf(" (%s: %s)", o.Reason, o.Message)
		}
		o = observation{apiv1.StateFailed, ReasonStartTimeout, msg}
	}
	if o.State != s.State || o.Reason != s.Reason || o.Message != s.Message {
		prev := s.State
		fresh, changed, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
			if x.State != s.State || (x.State == o.State && x.Reason == o.Reason && x.Message == o.Message) {
				return false, nil
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
		_, err := c.deletePod(ctx, s.ID)
		return err
	}
	if s.State == apiv1.StateRunning {
		c.maybeFireHook(s, false)
	} else {
		c.leftRunning(s.ID)
	}
	if d, ok := c.deadline(s); ok {
		c.enqueueAfter(s.ID, d.Sub(c.now())+100*time.Millisecond)
	}
	return nil
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
	_, err := c.launch(ctx, s, opRecreate)
	return err
}

// transitioned reacts to a state change the pod caused: metrics, events, hooks.
func (c *Controller) transitioned(ctx context.Context, s *store.Session, prev apiv1.SessionState, pod *corev1.Pod) {
	c.log.Info("session state changed", "session", s.ID, "from", prev, "to", s.State, "reason", s.Reason)
	switch s.State {
	case apiv1.StateRunning:
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

// maybeFireHook calls the ready hook for a Running session: always on a transition,
// otherwise (first sight after a restart or a new leadership term) only while the
// initial prompt is undelivered.
func (c *Controller) maybeFireHook(s *store.Session, transition bool) {
	c.mu.Lock()
	hook := c.readyHook
	h := c.hookState[s.ID]
	fire := hook != nil && !h.inflight && (transition || (!h.fired && s.Prompt != "" && !s.PromptSent))
	if !fire {
		if !transition && !h.fired {
			h.fired = true // nothing to deliver: do not look again this Running period
			c.hookState[s.ID] = h
		}
		c.mu.Unlock()
		return
	}
	c.hookState[s.ID] = hookMark{fired: true, inflight: true}
	ctx := c.baseCtx
	c.mu.Unlock()
	cp := *s
	go func() {
		defer func() {
			c.mu.Lock()
			if m, ok := c.hookState[cp.ID]; ok {
				m.inflight = false
				c.hookState[cp.ID] = m
			}
			c.mu.Unlock()
		}()
		hook(ctx, &cp)
	}()
}

// leftRunning re-arms the ready hook for the next Running period.
func (c *Controller) leftRunning(id string) {
	c.mu.Lock()
	if m, ok := c.hookState[id]; ok {
		if m.inflight {
			m.fired = false
			c.hookState[id] = m
		} else {
			delete(c.hookState, id)
		}
	}
	c.mu.Unlock()
}

func labelsEverything() labels.Selector { return labels.Everything() }

package sessions

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// launch makes sure the Secret (with modelKey, a LiteLLM key just made for s, or else
// a new one when s has none live), the PVC (persistent sessions) and the Pod of s exist;
// op (create, start, recreate) names its failpoints. Every step tolerates
// AlreadyExists, so it is safe to repeat after a crash. A permanent failure marks the
// session Failed (removing the Secret and PVC on first creation, when they hold
// nothing worth keeping) and returns nil; a transient one returns the error for a
// retry, and marks the session Failed after MaxCreateAttempts in a row. It returns the
// session as last written.
func (c *Controller) launch(ctx context.Context, s *store.Session, op, modelKey string) (*store.Session, error) {
	cleanup := op == opCreate
	// The CA bundle first: when it is missing nothing is created, so a failed Create
	// leaves only the Failed row that names the ConfigMap.
	err := c.checkCABundle(ctx)
	// The providers as they are now: a session's config is built at its start.
	var sp *sessionProviders
	if err == nil {
		sp, err = c.loadProviders(ctx, s.Model)
	}
	if err == nil {
		err = c.ensureSecret(ctx, s, sp, modelKey)
		failpoint.Hit(op, "secret", s.ID)
	}
	if err == nil && s.Persistent {
		err = c.ensurePVC(ctx, s)
		failpoint.Hit(op, "pvc", s.ID)
	}
	created := false
	if err == nil {
		created, err = c.ensurePod(ctx, s, sp)
		failpoint.Hit(op, "pod", s.ID)
	}
	if err == nil {
		c.forgetFailures(s.ID)
		if created {
			c.event(s, corev1.EventTypeNormal, "Created", fmt.Sprintf("Created session pod (image %s)", imageOf(s, c.cfg)))
		}
		return s, nil
	}

	gatewayDown := errors.Is(err, litellm.ErrUnavailable)
	volumeGoing := errors.Is(err, errVolumeTerminating)
	outage := gatewayDown || volumeGoing || unreachable(err)
	c.mu.Lock()
	if !outage {
		c.failures[s.ID]++
	}
	attempts := c.failures[s.ID]
	c.mu.Unlock()
	if !permanent(err) && (outage || attempts < c.cfg.MaxCreateAttempts) {
		msg := fmt.Sprintf("creating the session's objects failed (attempt %d of %d), retrying: %s", attempts, c.cfg.MaxCreateAttempts, apiMessage(err))
		switch {
		case gatewayDown:
			msg = "the session's LiteLLM key cannot be made yet, retrying: " + litellm.Advice(err)
		case volumeGoing:
			msg = errVolumeTerminating.Error()
		case outage:
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
		if _, derr := c.deleteObjects(ctx, op, s.ID, c.mayHavePVC(s)); derr != nil {
			c.log.Warn("clean up after failed create failed; the reconciler will retry", "session", s.ID, "error", derr)
		}
		if derr := c.revokeKeys(ctx, s.ID); derr != nil {
			c.log.Warn("delete the LiteLLM key after failed create failed; the reconciler will retry", "session", s.ID, "error", derr)
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

// ensureSecret makes sure s's Secret exists with a password, the key files of the
// providers sp (as they are now), the owner's git credential for the repository's host
// and, with LiteLLM keys, a live key: modelKey when the caller just made one, the one it
// holds when that is still live, else a new one (a stopped session's key was deleted; a
// lost Secret took its key with it, so that one is deleted too).
func (c *Controller) ensureSecret(ctx context.Context, s *store.Session, sp *sessionProviders, modelKey string) error {
	cur, cerr := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID))
	if cerr != nil || cur.DeletionTimestamp != nil {
		cur = nil
	}
	var curData map[string][]byte
	if cur != nil {
		curData = cur.Data
	}
	git, err := c.gitSecretData(ctx, s, curData)
	if err != nil {
		return err
	}
	if c.cfg.LiteLLM != nil && modelKey == "" {
		var held []byte
		if cur != nil {
			held = cur.Data[SecretKeyLiteLLM]
		}
		// The Secret's key must be the live one: a stop deletes the key but leaves it
		// in the Secret, and a start whose Secret update failed made a live key the
		// Secret does not hold.
		live, err := c.holdsLiveKey(ctx, s.ID, held)
		if err != nil {
			return err
		}
		if !live {
			if err := c.revokeKeys(ctx, s.ID); err != nil {
				return err
			}
			if modelKey, err = c.issueKey(ctx, s); err != nil {
				return err
			}
		}
	}
	if cur != nil && len(cur.Data[SecretKeyPassword]) > 0 && modelKey == "" && providerKeysMatch(cur.Data, sp) &&
		gitDataCurrent(cur.Data, git) {
		return nil // the common restart case, without an API call
	}
	secrets := c.kube.CoreV1().Secrets(c.cfg.Namespace)
	secret := c.buildSecret(s, newPassword(), sp, modelKey)
	setGitData(secret.Data, git)
	_, err = secrets.Create(ctx, secret, metav1.CreateOptions{})
	if err == nil || !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return fmt.Errorf("create secret %s: %w", SecretName(s.ID), err)
		}
		return nil
	}
	// It exists (a restart, or a retry after a crash): keep the password, but repair a
	// missing one and put in the new model key.
	cur, err = secrets.Get(ctx, SecretName(s.ID), metav1.GetOptions{})
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
	if modelKey != "" && string(want.Data[SecretKeyLiteLLM]) != modelKey {
		want.Data[SecretKeyLiteLLM] = []byte(modelKey)
		changed = true
	}
	if !providerKeysMatch(want.Data, sp) {
		// The providers changed since the Secret was written: follow them.
		for k := range want.Data {
			if strings.HasPrefix(k, providerKeyPrefix) {
				delete(want.Data, k)
			}
		}
		if sp != nil {
			maps.Copy(want.Data, sp.files)
		}
		changed = true
	}
	if !gitDataCurrent(want.Data, git) {
		setGitData(want.Data, git) // the owner's credential changed since the last start
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

// errVolumeTerminating: the session's volume claim is being deleted (its last pod, or a
// person, deleted it). A pod naming it would never be scheduled, so the start waits
// for it to go and then makes a new one; the wait is not a failed attempt.
var errVolumeTerminating = errors.New("the session's persistent volume claim is still being deleted; the session starts with a new one once it is gone")

func (c *Controller) ensurePVC(ctx context.Context, s *store.Session) error {
	pvcs := c.kube.CoreV1().PersistentVolumeClaims(c.cfg.Namespace)
	// An existing claim (a start after a stop) is read from the API, not the cache: a
	// delete the cache has not seen yet would otherwise give the pod a dying claim.
	// Starts are rare enough for the round trip.
	exists := func() (bool, error) {
		cur, err := pvcs.Get(ctx, PVCName(s.ID), metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return false, nil
		case err != nil:
			return false, fmt.Errorf("read persistent volume claim %s: %w", PVCName(s.ID), err)
		case cur.DeletionTimestamp != nil:
			return true, errVolumeTerminating
		}
		return true, nil
	}
	if _, err := c.pvcLister.PersistentVolumeClaims(c.cfg.Namespace).Get(PVCName(s.ID)); err == nil {
		if ok, err := exists(); ok || err != nil {
			return err
		}
	}
	pvc, err := c.buildPVC(s)
	if err != nil {
		return &permanentError{err: err}
	}
	_, err = pvcs.Create(ctx, pvc, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = exists() // the cache is behind: is the one there going away?
		return err
	}
	if err != nil {
		return fmt.Errorf("create persistent volume claim %s: %w", PVCName(s.ID), err)
	}
	return nil
}

func (c *Controller) ensurePod(ctx context.Context, s *store.Session, sp *sessionProviders) (bool, error) {
	pod, err := c.buildPod(s, sp)
	if err != nil {
		return false, &permanentError{err: err}
	}
	_, err = c.kube.CoreV1().Pods(c.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	switch {
	case err == nil:
		c.metrics.creates.WithLabelValues("created").Inc()
		c.expectPod(s.ID)
		return true, nil
	case apierrors.IsAlreadyExists(err):
		// Not expected: it may be a pod on its way out, whose delete must bring the
		// reconciler straight back to recreate it.
		c.metrics.creates.WithLabelValues("exists").Inc()
		return false, nil
	default:
		c.metrics.creates.WithLabelValues("error").Inc()
		return false, fmt.Errorf("create pod %s: %w", PodName(s.ID), err)
	}
}

// deletePod deletes the session's pod; it reports whether the pod is gone.
func (c *Controller) deletePod(ctx context.Context, id string) (bool, error) {
	c.observedPod(id)
	c.mu.Lock()
	before := c.beforeDelete
	c.mu.Unlock()
	if before != nil {
		// Only a pod still serving: not one already terminating (a retried stop) or
		// never started.
		if p, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil && p.DeletionTimestamp == nil && podReady(p) {
			before(ctx, id)
		}
	}
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

// mayHavePVC reports whether s can have a PVC to delete. Only a persistent session is
// given one (Persistent never changes after the create), so for the others the DELETE,
// one API round trip of every session delete, is skipped unless the cache shows a PVC
// of that name anyway.
func (c *Controller) mayHavePVC(s *store.Session) bool {
	if s.Persistent {
		return true
	}
	_, err := c.pvcLister.PersistentVolumeClaims(c.cfg.Namespace).Get(PVCName(s.ID))
	return err == nil
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

// deleteOrphans removes objects of this release whose session row does not exist, but
// not warm pool objects, which have none until claimed. The UID precondition makes sure
// a newer object with the same name is never hit.
func (c *Controller) deleteOrphans(ctx context.Context, id string, objs []metav1.Object) error {
	c.forget(id)
	for _, m := range objs {
		if m.GetDeletionTimestamp() != nil || m.GetLabels()[apiv1.LabelSessionID] != id || isWarm(m) {
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

// providerKeysMatch reports whether data holds exactly sp's provider keys.
func providerKeysMatch(data map[string][]byte, sp *sessionProviders) bool {
	n := 0
	for k, v := range data {
		if !strings.HasPrefix(k, providerKeyPrefix) {
			continue
		}
		n++
		if sp == nil || !bytes.Equal(sp.files[k], v) {
			return false
		}
	}
	return n == len(sp.keys())
}

func labelsEverything() labels.Selector { return labels.Everything() }

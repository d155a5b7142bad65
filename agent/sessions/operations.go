package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// The operations, as failpoint.Hit names them: every step that changes the database or
// the cluster is followed by a failpoint, so the reliability tests crash the agent there.
const (
	opCreate    = "create"
	opStart     = "start"
	opRecreate  = "recreate"
	opStop      = "stop"
	opDelete    = "delete"
	opReconcile = "reconcile"
)

type touchMark struct {
	at     time.Time
	source string
}

// touchEvery bounds activity writes per session and source; idle timeouts are minutes.
const touchEvery = 10 * time.Second

// lock takes the session's lock in the database, so operations on one session never
// interleave, whichever replica runs them: each sees the state the previous one left,
// Kubernetes objects included. A wait longer than LockWait is ErrBusy.
func (c *Controller) lock(ctx context.Context, id string) (func(), error) {
	lctx, cancel := context.WithTimeout(ctx, c.cfg.LockWait)
	defer cancel()
	unlock, err := c.st.LockSession(lctx, id)
	if err != nil {
		if ctx.Err() == nil && lctx.Err() != nil {
			return nil, fmt.Errorf("session %s is busy: another operation on it has been running for more than %s; retry shortly: %w", id, c.cfg.LockWait, ErrBusy)
		}
		return nil, fmt.Errorf("lock session %s: %w", id, err)
	}
	return unlock, nil
}

// Create stores s as a new Pending session (see fillNew) and creates its Secret, PVC
// and Pod. It returns an error only when the session was not stored
// (quota, duplicate id, database down). Once stored, Kubernetes failures never remove
// the row: a transient failure leaves the session Pending for the reconciler to retry,
// and a permanent one (admission rejects the pod, invalid spec) removes whatever was
// created and leaves the session Failed with reason PodRejected and the API server's
// message (or CABundleMissing, before anything is created, when the configured CA
// bundle ConfigMap is not there) — the caller sees it in s. With LiteLLM keys the
// session's key is made first (after the quota check): when that fails (wrapping ErrModelKey, and
// litellm.ErrUnavailable when LiteLLM is down) nothing is stored or created.
//
// With a warm pool, a session the pool can serve (see coldReason) takes a ready pool
// pod instead (createWarm): its id becomes the session's, StartKind is warm and it is
// Running when Create returns, if its OpenCode answers. When no pod can be claimed the
// create goes on cold, as without a pool: the pool never makes a create fail.
func (c *Controller) Create(ctx context.Context, s *store.Session, maxActive int) error {
	idChosen := s.ID != ""
	if err := c.fillNew(s); err != nil {
		return err
	}
	if why := c.coldReason(s, idChosen); why == "" {
		cold := *s
		ok, err := c.createWarm(ctx, s, maxActive)
		if ok || err != nil {
			return err
		}
		*s = cold
	} else if c.cfg.WarmPoolSize > 0 {
		c.log.Debug("creating the session cold", "session", s.ID, "why", why)
	}
	if idChosen {
		// A pool pod's id has no row yet, but it is taken: a session under it would
		// share that pod and Secret with whoever claims it.
		if p, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(s.ID)); err == nil && p.Labels[LabelPoolState] != "" {
			return fmt.Errorf("create session %s: the id is taken: %w", s.ID, store.ErrConflict)
		}
	}
	s.StartKind = apiv1.StartKindCold
	// Locked before it exists: the reconciler may see the row the moment it is stored.
	unlock, err := c.lock(ctx, s.ID)
	if err != nil {
		return err
	}
	defer unlock()
	var modelKey string
	if c.cfg.LiteLLM != nil {
		// The quota before the key: an owner over it makes no LiteLLM call, and gets
		// the quota error even while LiteLLM is down. CreateSession checks it again,
		// atomically.
		if err := c.checkQuota(ctx, s.OwnerID, maxActive); err != nil {
			return err
		}
		if modelKey, err = c.issueKey(ctx, s); err != nil {
			return fmt.Errorf("create session %s: %w", s.ID, err)
		}
	}
	if err := c.st.CreateSession(ctx, s, maxActive); err != nil {
		if modelKey != "" {
			if kerr := c.forgetKeys(ctx, s.ID); kerr != nil {
				c.log.Warn("delete the LiteLLM key of a session not stored failed; the reconciler will retry", "session", s.ID, "error", kerr)
			}
		}
		return fmt.Errorf("store session: %w", err)
	}
	failpoint.Hit(opCreate, "stored", s.ID)
	fresh, err := c.launch(ctx, s, opCreate, modelKey)
	if fresh != nil {
		*s = *fresh
	}
	if err != nil {
		c.log.Warn("create session pod failed; the reconciler will retry", "session", s.ID, "error", err)
	}
	c.enqueue(s.ID)
	return nil
}

// checkQuota fails with store.ErrQuotaExceeded, as CreateSession would, when maxActive
// > 0 and owner already has maxActive active sessions.
func (c *Controller) checkQuota(ctx context.Context, owner string, maxActive int) error {
	if maxActive <= 0 {
		return nil
	}
	var active []apiv1.SessionState
	for _, st := range apiv1.AllStates {
		if st.Active() {
			active = append(active, st)
		}
	}
	page, err := c.st.ListSessions(ctx, store.SessionFilter{OwnerID: owner, States: active, Limit: maxActive})
	if err != nil {
		return fmt.Errorf("store session: count active sessions: %w", err)
	}
	if n := len(page.Items); n >= maxActive {
		return fmt.Errorf("store session: owner %q has %d active sessions (limit %d): %w", owner, n, maxActive, store.ErrQuotaExceeded)
	}
	return nil
}

// Never, as a new session's IdleTimeout or TTL, asks for none (stored as 0), where 0
// asks for the configured default.
const Never time.Duration = -1

// fillNew makes s a new Pending session: it keeps what the caller chose (the API passes
// only the request's values; a zero idle timeout, TTL or model means the configured
// default, a Never idle timeout or TTL none) and fills in the id, the defaults, the
// state, the pod and the timestamps. This is the one place sessions get their defaults:
// the API answers with s and the pod spec is built from it.
func (c *Controller) fillNew(s *store.Session) error {
	if s.ID == "" {
		s.ID = NewID()
	}
	if !ValidID(s.ID) {
		return fmt.Errorf("invalid session id %q: use lowercase letters, digits and '-', starting with a letter", s.ID)
	}
	if s.OwnerID == "" {
		return errors.New("session has no owner")
	}
	if s.Model == "" {
		s.Model = c.cfg.DefaultModel
	}
	switch s.IdleTimeout {
	case 0:
		s.IdleTimeout = c.cfg.DefaultIdleTimeout
	case Never:
		s.IdleTimeout = 0
	}
	switch s.TTL {
	case 0:
		s.TTL = c.cfg.DefaultTTL
	case Never:
		s.TTL = 0
	}
	now := c.now().UTC()
	s.State, s.Reason, s.Message = apiv1.StatePending, "", ""
	s.PodName, s.PodNamespace = PodName(s.ID), c.cfg.Namespace
	s.CreatedAt, s.UpdatedAt = now, now
	s.StartedAt, s.StoppedAt = &now, nil
	s.LastActivityAt, s.LastActivitySource = now, "create"
	return nil
}

// Stop records the intent to stop (state Stopping with reason and message) and
// deletes the pod; the Secret and PVC stay. The session turns Stopped once the pod is
// gone. Stopping a stopped session is a no-op.
func (c *Controller) Stop(ctx context.Context, id, reason, message string) (*store.Session, error) {
	if reason == "" {
		reason = ReasonStoppedByUser
	}
	unlock, err := c.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	s, changed, err := c.update(ctx, id, func(s *store.Session) (bool, error) {
		switch s.State {
		case apiv1.StateStopped, apiv1.StateStopping:
			return false, nil
		case apiv1.StateDeleting:
			return false, fmt.Errorf("session %s is being deleted: %w", id, ErrInvalidState)
		}
		s.State, s.Reason, s.Message = apiv1.StateStopping, reason, message
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if changed {
		c.log.Info("stopping session", "session", id, "reason", reason)
		failpoint.Hit(opStop, "marked", id)
	}
	if s.State == apiv1.StateStopping {
		if s2, err := c.finishStop(ctx, s); err != nil {
			c.log.Warn("stop session failed; the reconciler will retry", "session", id, "error", err)
		} else {
			s = s2
		}
	}
	c.enqueue(id)
	return s, nil
}

// Start restarts a Stopped or Failed session with a new pod (same Secret and PVC). It
// is a no-op for a session that is already starting or running. With maxActive > 0 a
// start that would give the owner more active sessions fails with
// store.ErrQuotaExceeded, checked in the database like a create's.
func (c *Controller) Start(ctx context.Context, id string, maxActive int) (*store.Session, error) {
	unlock, err := c.lock(ctx, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	now := c.now().UTC()
	activate := func(ctx context.Context, s *store.Session) error { return c.st.ActivateSession(ctx, s, maxActive) }
	s, changed, err := c.updateWith(ctx, id, activate, func(s *store.Session) (bool, error) {
		switch s.State {
		case apiv1.StatePending, apiv1.StateStarting, apiv1.StateRunning:
			return false, nil
		case apiv1.StateStopping:
			return false, fmt.Errorf("session %s is still stopping; start it once it is Stopped: %w", id, ErrInvalidState)
		case apiv1.StateDeleting:
			return false, fmt.Errorf("session %s is being deleted: %w", id, ErrInvalidState)
		}
		s.State, s.Reason, s.Message = apiv1.StatePending, "", ""
		s.StartedAt, s.StoppedAt = &now, nil
		s.LastActivityAt, s.LastActivitySource = now, "start"
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	if !changed {
		return s, nil
	}
	failpoint.Hit(opStart, "marked", id)
	c.forgetFailures(id)
	c.log.Info("starting session", "session", id)
	fresh, err := c.launch(ctx, s, opStart, "")
	if fresh != nil {
		s = fresh
	}
	if err != nil {
		c.log.Warn("start session pod failed; the reconciler will retry", "session", id, "error", err)
	}
	c.enqueue(id)
	return s, nil
}

// Delete records the intent to delete (state Deleting) and removes the pod, Secret and
// PVC; the row goes once they are gone (at once when nothing was running, otherwise
// when the reconciler sees the pod disappear).
func (c *Controller) Delete(ctx context.Context, id string) error {
	unlock, err := c.lock(ctx, id)
	if err != nil {
		return err
	}
	defer unlock()
	s, err := c.markDeleting(ctx, id, ReasonDeletedByUser, "deleted by the user")
	if err != nil {
		return err
	}
	failpoint.Hit(opDelete, "marked", id)
	if _, err := c.finishDelete(ctx, s); err != nil {
		c.log.Warn("delete session objects failed; the reconciler will retry", "session", id, "error", err)
	}
	c.enqueue(id)
	return nil
}

// Touch records activity on a session. Writes are rate-limited per session and source,
// so it is cheap enough to call on every proxied request.
func (c *Controller) Touch(ctx context.Context, id, source string) {
	now := c.now().UTC()
	c.mu.Lock()
	last, ok := c.touched[id]
	if ok && last.source == source && now.Sub(last.at) < touchEvery {
		c.mu.Unlock()
		return
	}
	c.touched[id] = touchMark{at: now, source: source}
	c.mu.Unlock()
	if err := c.st.TouchSession(ctx, id, now, source); err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("record session activity failed", "session", id, "source", source, "error", err)
		c.mu.Lock()
		delete(c.touched, id) // write again next time
		c.mu.Unlock()
	}
}

// Password returns the OpenCode server password of s from its Secret.
func (c *Controller) Password(ctx context.Context, s *store.Session) (string, error) {
	sec, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID))
	if err != nil {
		// The cache may not have it yet (just created) or may not run (not started).
		sec, err = c.kube.CoreV1().Secrets(c.cfg.Namespace).Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("read the password of session %s: %w", s.ID, err)
	}
	p := sec.Data[SecretKeyPassword]
	if len(p) == 0 {
		return "", fmt.Errorf("secret %s/%s has no %q key: restart the session to repair it", c.cfg.Namespace, sec.Name, SecretKeyPassword)
	}
	return string(p), nil
}

// update applies mutate to the stored session and writes it back, retrying on
// optimistic-concurrency conflicts. mutate reports whether it changed anything.
func (c *Controller) update(ctx context.Context, id string, mutate func(*store.Session) (bool, error)) (*store.Session, bool, error) {
	return c.updateWith(ctx, id, c.st.UpdateSession, mutate)
}

// updateWith is update writing through write (UpdateSession or a quota-checked
// ActivateSession).
func (c *Controller) updateWith(ctx context.Context, id string, write func(context.Context, *store.Session) error, mutate func(*store.Session) (bool, error)) (*store.Session, bool, error) {
	var out *store.Session
	var changed bool
	err := retry.OnError(retry.DefaultRetry, func(err error) bool { return errors.Is(err, store.ErrConflict) }, func() error {
		s, err := c.st.GetSession(ctx, id)
		if err != nil {
			return err
		}
		ch, err := mutate(s)
		if err != nil {
			return err
		}
		if ch {
			if err := write(ctx, s); err != nil {
				return err
			}
		}
		out, changed = s, ch
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("update session %s: %w", id, err)
	}
	return out, changed, nil
}

func (c *Controller) markDeleting(ctx context.Context, id, reason, message string) (*store.Session, error) {
	s, changed, err := c.update(ctx, id, func(s *store.Session) (bool, error) {
		if s.State == apiv1.StateDeleting {
			return false, nil
		}
		s.State, s.Reason, s.Message = apiv1.StateDeleting, reason, message
		return true, nil
	})
	if err == nil && changed {
		c.log.Info("deleting session", "session", id, "reason", reason)
		c.event(s, corev1.EventTypeNormal, reason, "Deleting session: "+message)
	}
	return s, err
}

// finishStop deletes the pod of a Stopping session and marks it Stopped once it is gone.
func (c *Controller) finishStop(ctx context.Context, s *store.Session) (*store.Session, error) {
	gone, err := c.deletePod(ctx, s.ID)
	if err != nil || !gone {
		return s, err
	}
	failpoint.Hit(opStop, "pod-deleted", s.ID)
	if err := c.dropGitCredentials(ctx, s.ID); err != nil {
		return s, err
	}
	// A stopped session spends nothing: its key goes now (a new one at start).
	if err := c.revokeKeys(ctx, s.ID); err != nil {
		c.log.Warn("delete the LiteLLM key of a stopped session failed; the reconciler will retry", "session", s.ID, "error", err)
	}
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
	// The key first, so a crash never leaves one whose Secret is gone; when LiteLLM
	// cannot be reached the delete goes on and the key's live row outlives the session
	// for the reconciler (see sweep).
	keysGone := true
	if err := c.revokeKeys(ctx, s.ID); err != nil {
		keysGone = false
		c.log.Warn("delete the LiteLLM key of a deleted session failed; the reconciler will retry", "session", s.ID, "error", err)
	}
	gone, err := c.deleteObjects(ctx, opDelete, s.ID, c.mayHavePVC(s))
	if err != nil || !gone {
		return false, err
	}
	if err := c.st.DeleteSession(ctx, s.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return false, fmt.Errorf("delete session %s: %w", s.ID, err)
	}
	failpoint.Hit(opDelete, "row-deleted", s.ID)
	if keysGone {
		if err := c.forgetKeys(ctx, s.ID); err != nil {
			c.log.Warn("forget the LiteLLM keys of a deleted session failed", "session", s.ID, "error", err)
		}
	}
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
	delete(c.expected, id)
	c.mu.Unlock()
}

func (c *Controller) forgetFailures(id string) {
	c.mu.Lock()
	delete(c.failures, id)
	c.mu.Unlock()
}

// event records a Kubernetes Event on the session's pod (by name, so it also works
// when the pod is already gone).
func (c *Controller) event(s *store.Session, typ, reason, msg string) {
	ref := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: PodName(s.ID), Namespace: c.cfg.Namespace}}
	c.recorder.Event(ref, typ, reason, msg)
}

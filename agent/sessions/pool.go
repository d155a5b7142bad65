package sessions

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/util/retry"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/providers"
	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/internal/failpoint"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// The warm pool. A pool pod is a session pod whose session id is chosen before any
// session exists: it is named and labelled like every session pod, has its own Secret
// (holding its OpenCode password, which nobody has seen yet) and runs OpenCode with the
// pool's template, the default model and the configured providers, no repository and no
// one's credentials. LabelPoolState says whether it waits (warm) or was taken (claimed);
// LabelPoolTemplate is a hash of everything the pod and Secret were built from, so pods
// of an older configuration are replaced.
//
// The leader keeps WarmPoolSize warm pods of the current template (reconcilePool). Any
// replica claims one in Create: it takes the session lock of the pod's id, then relabels
// the pod with the resourceVersion it read — Kubernetes lets exactly one such update win,
// so two creates never get the same pod — and only then stores the session row under
// that id. A claimed pod is the session's own from then on; it never goes back to the
// pool, and when the row cannot be stored it is deleted. A warm pod has no row, so the
// orphan collection leaves warm objects to the pool; a claimed one without a row (a
// crash between claim and insert) is an orphan like any other.
const (
	LabelPoolState    = "agents.cake.ai/pool-state"
	LabelPoolTemplate = "agents.cake.ai/pool-template"
	PoolStateWarm     = "warm"
	PoolStateClaimed  = "claimed"
)

// poolInterval is how often the leader tops the pool up even when no watch event asked.
const poolInterval = 5 * time.Second

// claimLockWait bounds the wait for the lock of a pool pod's id: another create holds it
// while it claims that pod, so trying the next pod is faster than waiting.
const claimLockWait = 200 * time.Millisecond

// poolCreatedGrace is how long a pool pod this replica created counts as warm before
// the cache shows it: a pass that ran before the watch delivered the pod must not create
// another one in its place.
const poolCreatedGrace = 30 * time.Second

// poolSecretGrace is how long a pool Secret may exist without its pod before the pool
// deletes it: the Secret is created before the pod, and the cache may not show the pod yet.
const poolSecretGrace = time.Minute

// poolSession is the session a pool pod of id is built for.
func (c *Controller) poolSession(id string) *store.Session {
	return &store.Session{ID: id, Model: c.cfg.DefaultModel, PodName: PodName(id), PodNamespace: c.cfg.Namespace}
}

// isWarm reports whether m is a pool object nobody has claimed.
func isWarm(m metav1.Object) bool { return m.GetLabels()[LabelPoolState] == PoolStateWarm }

// poolTemplate returns the providers a pool pod starts with now and the hash of its
// template: the pod spec (image, resources, model, provider config, ...) and the
// provider key files of its Secret.
func (c *Controller) poolTemplate(ctx context.Context) (*sessionProviders, string, error) {
	sp, err := c.loadProviders(ctx, c.cfg.DefaultModel)
	if err != nil {
		return nil, "", err
	}
	pod, err := c.buildPoolPod(c.poolSession("template"), sp)
	if err != nil {
		return nil, "", err
	}
	h := sha256.New()
	if err := json.NewEncoder(h).Encode(pod.Spec); err != nil {
		return nil, "", fmt.Errorf("hash the pool template: %w", err)
	}
	keys := sp.keys()
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%x\n", k, sha256.Sum256(sp.files[k]))
	}
	return sp, hex.EncodeToString(h.Sum(nil))[:16], nil
}

// coldReason says why s (filled by fillNew) cannot take a pool pod, "" when it can.
// idChosen: the caller named the session's id, which a pool pod's id is not.
func (c *Controller) coldReason(s *store.Session, idChosen bool) string {
	switch {
	case c.cfg.WarmPoolSize <= 0:
		return "the warm pool is off"
	case idChosen:
		return "the session id was chosen by the caller"
	case s.Model != c.cfg.DefaultModel:
		return "the model is not the default one the pool starts with"
	case s.Image != "" || s.InitImage != "":
		return "the session overrides an image"
	case s.Persistent:
		return "a persistent workspace is mounted at pod creation"
	case s.Repo != "" && c.workspacePreparer() == nil:
		return "nothing can clone a repository into a running pool pod"
	case s.Repo != "" && apiv1.RepoSSHHost(s.Repo) != "":
		return "an ssh repository needs keys mounted at pod creation"
	case c.cfg.LiteLLM != nil && c.keyDeliverer() == nil:
		return "nothing can give a pool pod's OpenCode the session's LiteLLM key"
	}
	return ""
}

// KeyDelivery gives a session's OpenCode the API key of a provider at run time (the
// agent's is conversation.Relay.SetModelKey: PUT /auth/{provider} through the tunnel).
type KeyDelivery func(ctx context.Context, s *store.Session, provider, key string) error

// SetKeyDelivery lets sessions with their own LiteLLM key start warm: the key is made at
// claim and handed to the pool pod's OpenCode, whose config names no key (see
// sessioninit.Options.KeyAtClaim). Without it such sessions start cold.
func (c *Controller) SetKeyDelivery(f KeyDelivery) {
	c.mu.Lock()
	c.keyDelivery = f
	c.mu.Unlock()
}

func (c *Controller) keyDeliverer() KeyDelivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.keyDelivery
}

// WorkspacePrep runs argv in dir ("" OpenCode's own directory, the workspace) of a
// claimed pool pod's OpenCode container, with env added, and fails unless it exits 0.
// The agent's is conversation.Relay.PrepareWorkspace: OpenCode's own terminal API through
// the tunnel, then a restart of its instance so it sees the clone as its git project.
type WorkspacePrep func(ctx context.Context, s *store.Session, dir string, env map[string]string, argv []string) error

// SetWorkspacePrep lets sessions with a repository start warm: the repository is cloned
// into the claimed pod's workspace before the create returns. Without it they start cold.
func (c *Controller) SetWorkspacePrep(f WorkspacePrep) {
	c.mu.Lock()
	c.workspacePrep = f
	c.mu.Unlock()
}

func (c *Controller) workspacePreparer() WorkspacePrep {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.workspacePrep
}

// cloneAtClaimTimeout bounds the clone into a claimed pod, which the create call waits
// for; a repository that takes longer is left to a cold start, whose init container has
// no such bound (and reports a failure as the session's).
const cloneAtClaimTimeout = 2 * time.Minute

// needsGitCredentials says whether cloning s's repository takes a credential, which a
// pool pod cannot be given after it started: the owner's token for the host is a file of
// the Secret behind a credential helper configured by the init container, and so is a
// GitHub App token. Such sessions start cold.
func (c *Controller) needsGitCredentials(ctx context.Context, s *store.Session) (bool, error) {
	host := apiv1.RepoCredentialHost(s.Repo)
	if !s.Private || host == "" {
		return false, nil
	}
	if _, _, ok := c.appRepo(s); ok {
		return true, nil
	}
	_, err := c.st.GetCredential(ctx, s.OwnerID, gitcred.Provider(host))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// cloneAtClaim clones s's repository into the claimed pod's workspace, as the init
// container of a cold pod would have (same git arguments, no credential). It runs in
// OpenCode's own directory, which is the workspace: OpenCode serves from there.
func (c *Controller) cloneAtClaim(ctx context.Context, s *store.Session) error {
	ctx, cancel := context.WithTimeout(ctx, cloneAtClaimTimeout)
	defer cancel()
	argv := append([]string{"git"}, sessioninit.CloneArgs(s.Repo, s.Branch, "", false)...)
	env := map[string]string{"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false"}
	return c.workspacePreparer()(ctx, s, "", env, argv)
}

// buildPoolPod is buildPod for a pool pod: with LiteLLM keys its config names no key,
// since the key is given at claim.
func (c *Controller) buildPoolPod(s *store.Session, sp *sessionProviders) (*corev1.Pod, error) {
	pod, err := c.buildPod(s, sp)
	if err != nil || c.cfg.LiteLLM == nil || sp != nil {
		return pod, err
	}
	pod.Spec.InitContainers[0].Args = append(pod.Spec.InitContainers[0].Args, "--key-at-claim")
	return pod, nil
}

// createWarm stores s under the id of a claimed pool pod and makes it Running when that
// pod's OpenCode answers. ok=false (and no error) means no pod could be claimed: nothing
// was changed and the caller creates s cold. An error is the store's (quota, outage), the
// same a cold create returns; the claimed pod is deleted then.
func (c *Controller) createWarm(ctx context.Context, s *store.Session, maxActive int) (ok bool, err error) {
	if err := c.checkQuota(ctx, s.OwnerID, maxActive); err != nil {
		return false, err // the owner may not have another session: keep the pool's pods
	}
	if c.checkCABundle(ctx) != nil {
		return false, nil
	}
	sp, hash, err := c.poolTemplate(ctx)
	if err != nil {
		c.log.Warn("warm pool template unavailable; creating the session cold", "error", err)
		return false, nil
	}
	if c.cfg.LiteLLM != nil && sp != nil {
		// Stored providers reference the session's key by environment variable, which
		// a running OpenCode cannot be given.
		return false, nil
	}
	if s.Repo != "" {
		creds, err := c.needsGitCredentials(ctx, s)
		if err != nil {
			c.log.Warn("look up the owner's git credential failed; creating the session cold", "error", err)
			return false, nil
		}
		if creds {
			return false, nil
		}
	}
	pod, unlock := c.claim(ctx, s.OwnerID, hash)
	if pod == nil {
		c.metrics.creates.WithLabelValues("pool-empty").Inc()
		return false, nil
	}
	defer unlock()
	id := pod.Labels[apiv1.LabelSessionID]
	s.ID, s.PodName, s.StartKind = id, PodName(id), apiv1.StartKindWarm
	failpoint.Hit(opCreate, "claimed", id)
	probe := c.probeClaimed(ctx, s)
	if probe != nil {
		defer func() { _ = probe() }() // a create that goes cold waits for it too: no stray probe
	}
	// Never back to the pool: the pod ran for a create that did not happen.
	drop := func() {
		if _, derr := c.deleteObjects(ctx, opCreate, id, false); derr != nil {
			c.log.Warn("delete a claimed pool pod after a failed create failed; the reconciler will remove it", "session", id, "error", derr)
		}
	}
	var modelKey string
	if c.cfg.LiteLLM != nil {
		// As in a cold create: the key before the row, and no row without a key.
		if modelKey, err = c.issueKey(ctx, s); err != nil {
			drop()
			return false, fmt.Errorf("create session %s: %w", s.ID, err)
		}
	}
	// Everything the session needs is in place before its row exists: the Secret is
	// its own (with the key, for a pod that replaces this one) and the running OpenCode
	// has the key. A crash before the row leaves only objects without a session, which
	// the reconciler removes as orphans (and the key with them); a crash after it leaves
	// a complete session. Either failing here sends the create cold instead.
	goCold := func(what string, err error) (bool, error) {
		c.log.Warn(what+"; creating the session cold", "session", id, "error", err)
		drop()
		if modelKey != "" {
			if kerr := c.forgetKeys(ctx, id); kerr != nil {
				c.log.Warn("delete the LiteLLM key of a session not stored failed; the reconciler will retry", "session", id, "error", kerr)
			}
		}
		c.metrics.creates.WithLabelValues("claim-failed").Inc()
		return false, nil
	}
	if err := c.adoptSecret(ctx, s, modelKey); err != nil {
		return goCold("adopt the Secret of a claimed pool pod failed", err)
	}
	if s.Repo != "" {
		// A clone that fails here is tried again by the cold start, whose init container
		// tells the session why it failed.
		if err := c.cloneAtClaim(ctx, s); err != nil {
			return goCold("clone the repository into a claimed pool pod failed", err)
		}
	}
	if modelKey != "" {
		if err := c.keyDeliverer()(ctx, s, providers.LiteLLM, modelKey); err != nil {
			return goCold("give the claimed pod's OpenCode its LiteLLM key failed", err)
		}
	}
	if err := c.st.CreateSession(ctx, s, maxActive); err != nil {
		drop()
		if modelKey != "" {
			if kerr := c.forgetKeys(ctx, id); kerr != nil {
				c.log.Warn("delete the LiteLLM key of a session not stored failed; the reconciler will retry", "session", id, "error", kerr)
			}
		}
		return false, fmt.Errorf("store session: %w", err)
	}
	failpoint.Hit(opCreate, "stored", s.ID)
	// The session exists: what follows must not stop with a caller that went away.
	ctx = context.WithoutCancel(ctx)
	c.metrics.creates.WithLabelValues("claimed").Inc()
	c.kickPool()
	c.event(s, corev1.EventTypeNormal, "Claimed", "Claimed a warm pool pod")
	c.markRunning(ctx, s, pod, probe)
	c.enqueue(s.ID)
	return true, nil
}

// claim takes a ready warm pod of template hash for owner and returns it with the
// session lock of its id held (the caller unlocks); nil when none could be taken.
func (c *Controller) claim(ctx context.Context, owner, hash string) (*corev1.Pod, func()) {
	sel := labels.SelectorFromSet(labels.Set{LabelPoolState: PoolStateWarm, LabelPoolTemplate: hash})
	pods, err := c.podLister.Pods(c.cfg.Namespace).List(sel)
	if err != nil {
		return nil, nil
	}
	// In random order, so concurrent creates mostly try different pods.
	rand.Shuffle(len(pods), func(i, j int) { pods[i], pods[j] = pods[j], pods[i] })
	for _, p := range pods {
		if !claimable(p, hash) {
			continue
		}
		id := p.Labels[apiv1.LabelSessionID]
		lctx, cancel := context.WithTimeout(ctx, claimLockWait)
		unlock, err := c.st.LockSession(lctx, id)
		cancel()
		if err != nil {
			continue // another create is claiming it
		}
		claimed, err := c.claimPod(ctx, p, owner, hash)
		if err == nil {
			return claimed, unlock
		}
		unlock()
		if !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			c.log.Warn("claim a warm pool pod failed", "pod", p.Name, "error", err)
		}
	}
	return nil, nil
}

// claimPod relabels p as claimed by owner, conditionally on the resourceVersion read:
// of concurrent claims, and of a claim racing the pool's delete, exactly one wins. A
// conflict caused by something else (the kubelet's status updates) is retried once on a
// fresh read that is still claimable.
func (c *Controller) claimPod(ctx context.Context, p *corev1.Pod, owner, hash string) (*corev1.Pod, error) {
	pods := c.kube.CoreV1().Pods(c.cfg.Namespace)
	var err error
	for attempt := 0; attempt < 2; attempt++ {
		want := p.DeepCopy()
		want.Labels[LabelPoolState] = PoolStateClaimed
		want.Labels[apiv1.LabelOwnerID] = owner
		var got *corev1.Pod
		if got, err = pods.Update(ctx, want, metav1.UpdateOptions{}); err == nil {
			return got, nil
		}
		if !apierrors.IsConflict(err) {
			return nil, err
		}
		if p, err = pods.Get(ctx, p.Name, metav1.GetOptions{}); err != nil {
			return nil, err
		}
		if !claimable(p, hash) {
			return nil, apierrors.NewConflict(corev1.Resource("pods"), p.Name, errors.New("no longer a warm pool pod"))
		}
	}
	return nil, err
}

// claimable reports whether p is a warm pool pod of template hash whose OpenCode is ready.
func claimable(p *corev1.Pod, hash string) bool {
	if p.DeletionTimestamp != nil || !isWarm(p) || p.Labels[LabelPoolTemplate] != hash || p.Labels[apiv1.LabelSessionID] == "" {
		return false
	}
	return podReady(p)
}

func podReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// adoptSecret makes the claimed pod's Secret the session's: its owner label set, out of
// the pool, and holding modelKey ("" none), the session's LiteLLM key, for a pod that
// replaces this one. Its password stays: OpenCode started with it, and no one has seen it.
func (c *Controller) adoptSecret(ctx context.Context, s *store.Session, modelKey string) error {
	secrets := c.kube.CoreV1().Secrets(c.cfg.Namespace)
	// The pool's pass may adopt it at the same time (it sees a pool Secret whose pod is
	// no longer warm): retry on the conflict, so the key is never lost to that race.
	// The first try starts from the informer's copy, saving a round trip; a stale copy
	// is a conflict too, and the retries read the API server's.
	cached := true
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var sec *corev1.Secret
		if cached {
			cached = false
			if cur, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID)); err == nil {
				sec = cur.DeepCopy()
			}
		}
		if sec == nil {
			var err error
			if sec, err = secrets.Get(ctx, SecretName(s.ID), metav1.GetOptions{}); err != nil {
				return fmt.Errorf("read secret %s: %w", SecretName(s.ID), err)
			}
		}
		if sec.Labels[LabelPoolState] == PoolStateClaimed && sec.Labels[apiv1.LabelOwnerID] == s.OwnerID &&
			(modelKey == "" || string(sec.Data[SecretKeyLiteLLM]) == modelKey) {
			return nil
		}
		if sec.Labels == nil {
			sec.Labels = map[string]string{}
		}
		if modelKey != "" {
			if sec.Data == nil {
				sec.Data = map[string][]byte{}
			}
			sec.Data[SecretKeyLiteLLM] = []byte(modelKey)
		}
		sec.Labels[LabelPoolState] = PoolStateClaimed
		sec.Labels[apiv1.LabelOwnerID] = s.OwnerID
		_, err := secrets.Update(ctx, sec, metav1.UpdateOptions{})
		return err
	})
}

// probeClaimed asks the claimed pod's OpenCode for its health in the background and
// returns the wait for the answer (nil when no health check is set). Its first request
// opens the tunnel to the pod, a port-forward through the API server and the slowest
// step of a claim, so it runs while the Secret and the row are written; the key delivery
// and the clone at claim share that tunnel. The probe is of a copy of s, which the
// claim goes on changing; wait may be called more than once.
func (c *Controller) probeClaimed(ctx context.Context, s *store.Session) (wait func() error) {
	c.mu.Lock()
	check := c.healthCheck
	c.mu.Unlock()
	if check == nil {
		return nil
	}
	hctx, cancel := context.WithTimeout(ctx, healthProbeTimeout)
	sess := *s
	done := make(chan error, 1)
	go func() { done <- check(hctx, &sess) }()
	return sync.OnceValue(func() error {
		defer cancel()
		return <-done
	})
}

// markRunning turns a just-claimed session Running when its OpenCode has answered
// probe (see probeClaimed), so the create returns an attachable session; otherwise it
// stays Pending and the reconciler takes it from there, as for a cold one.
func (c *Controller) markRunning(ctx context.Context, s *store.Session, pod *corev1.Pod, probe func() error) {
	if probe != nil {
		if err := probe(); err != nil {
			c.log.Warn("claimed pool pod's OpenCode does not answer; the reconciler will wait for it", "session", s.ID, "error", err)
			return
		}
		c.mu.Lock()
		c.health[s.ID] = healthMark{podUID: pod.UID, healthy: true}
		c.mu.Unlock()
	}
	prev := s.State
	fresh, changed, err := c.update(ctx, s.ID, func(x *store.Session) (bool, error) {
		if x.State != apiv1.StatePending {
			return false, nil
		}
		x.State, x.Reason, x.Message = apiv1.StateRunning, "", ""
		return true, nil
	})
	if err != nil {
		c.log.Warn("mark a claimed session running failed; the reconciler will", "session", s.ID, "error", err)
		return
	}
	*s = *fresh
	if !changed {
		return
	}
	c.mu.Lock()
	leading := c.queue != nil
	c.mu.Unlock()
	if leading {
		c.transitioned(ctx, s, prev, pod)
		return
	}
	// Only the leader fires the ready hook (the initial prompt): its reconcile, woken by
	// the claim, does, and firing here too would deliver the prompt twice.
	c.log.Info("session state changed", "session", s.ID, "from", prev, "to", s.State, "reason", s.Reason)
	c.recorder.Event(pod, corev1.EventTypeNormal, "SessionRunning", "OpenCode is ready")
	c.clearHealth(s.ID, "")
}

// kickPool asks the pool loop (on the leader) for a pass now.
func (c *Controller) kickPool() {
	select {
	case c.poolKick <- struct{}{}:
	default:
	}
}

// poolLoop keeps the pool at its size until ctx ends; the leader runs it.
func (c *Controller) poolLoop(ctx context.Context) {
	t := time.NewTicker(poolInterval)
	defer t.Stop()
	for {
		if err := c.reconcilePool(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("warm pool reconcile failed; retrying", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-c.poolKick:
		}
	}
}

// reconcilePool deletes warm pods of another template (and all of them when the pool is
// off), warm pods that failed, and pool Secrets whose pod is gone (adopting instead those
// a claim stored a session for), then creates pods
// until WarmPoolSize warm ones of the current template exist. Claimed pods are sessions
// and never counted.
func (c *Controller) reconcilePool(ctx context.Context) error {
	warm := labels.SelectorFromSet(labels.Set{LabelPoolState: PoolStateWarm})
	pods, err := c.podLister.Pods(c.cfg.Namespace).List(warm)
	if err != nil {
		return err
	}
	secrets, err := c.secretLister.Secrets(c.cfg.Namespace).List(warm)
	if err != nil {
		return err
	}
	size := c.cfg.WarmPoolSize
	var sp *sessionProviders
	hash := ""
	if size > 0 {
		if err := c.checkCABundle(ctx); err != nil {
			return err
		}
		if sp, hash, err = c.poolTemplate(ctx); err != nil {
			return err
		}
		if c.cfg.LiteLLM != nil && sp != nil {
			// No create can claim a pod now (see createWarm): keep none.
			size = 0
		}
	}
	have := 0
	var current []*corev1.Pod // warm pods of the current template, in the cache
	podIDs := map[string]bool{}
	for _, p := range pods {
		id := p.Labels[apiv1.LabelSessionID]
		podIDs[id] = true
		if p.DeletionTimestamp != nil {
			continue
		}
		if size > 0 && p.Labels[LabelPoolTemplate] == hash && observe(p, "").State != apiv1.StateFailed {
			have++
			current = append(current, p)
			continue
		}
		if err := c.deleteWarmPod(ctx, p); err != nil {
			return err
		}
	}
	// Pods an earlier pass created count until the list above shows them. The cache may
	// show one only now (the calls since the list take round trips): a warm pod the list
	// missed still counts, or the pool would create one too many and delete it again; a
	// claimed one is a session's now, and one the grace outlived is the cache's to show.
	now := c.now()
	c.mu.Lock()
	for id, at := range c.poolCreated {
		if podIDs[id] || now.Sub(at) > poolCreatedGrace {
			delete(c.poolCreated, id)
			continue
		}
		if p, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil && !isWarm(p) {
			delete(c.poolCreated, id)
			continue
		}
		if size > 0 {
			have++
		}
	}
	c.mu.Unlock()
	for _, sec := range secrets {
		id := sec.Labels[apiv1.LabelSessionID]
		if podIDs[id] || sec.DeletionTimestamp != nil {
			continue
		}
		if _, err := c.podLister.Pods(c.cfg.Namespace).Get(PodName(id)); err == nil {
			continue // claimed a moment ago: its create adopts the Secret
		}
		// A claim whose Secret could not be adopted: the session's now, whatever its
		// pod does.
		if s, err := c.st.GetSession(ctx, id); err == nil {
			if err := c.adoptSecret(ctx, s, ""); err != nil {
				return err
			}
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("read session %s: %w", id, err)
		}
		if now.Sub(sec.CreationTimestamp.Time) < poolSecretGrace {
			continue
		}
		uid := sec.UID
		err := c.kube.CoreV1().Secrets(c.cfg.Namespace).Delete(ctx, sec.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("delete pool secret %s: %w", sec.Name, err)
		}
	}
	// More than size (the size was lowered, or a pass counted a pod the cache had not
	// shown yet while another replaced it): the surplus goes, pods not ready yet first,
	// so the pool converges on its size from either side.
	sort.SliceStable(current, func(i, j int) bool { return !podReady(current[i]) && podReady(current[j]) })
	for ; have > size && len(current) > 0; have-- {
		if err := c.deleteWarmPod(ctx, current[0]); err != nil {
			return err
		}
		current = current[1:]
	}
	for ; have < size; have++ {
		if err := c.createPoolPod(ctx, sp, hash); err != nil {
			return err
		}
	}
	c.metrics.poolWarm.Set(float64(have))
	return nil
}

// deleteWarmPod deletes a warm pod, on condition that it was not claimed since it was
// read (the resourceVersion precondition), and then its Secret.
func (c *Controller) deleteWarmPod(ctx context.Context, p *corev1.Pod) error {
	rv := p.ResourceVersion
	err := c.kube.CoreV1().Pods(c.cfg.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	switch {
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		return nil // claimed or changed meanwhile: the next pass sees it as it is
	case err != nil:
		return fmt.Errorf("delete pool pod %s: %w", p.Name, err)
	}
	c.log.Info("deleted a warm pool pod", "pod", p.Name, "template", p.Labels[LabelPoolTemplate])
	err = c.kube.CoreV1().Secrets(c.cfg.Namespace).Delete(ctx, SecretName(p.Labels[apiv1.LabelSessionID]), metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pool secret of %s: %w", p.Name, err)
	}
	return nil
}

// createPoolPod creates the Secret and the pod of a new warm pool pod of template hash.
func (c *Controller) createPoolPod(ctx context.Context, sp *sessionProviders, hash string) error {
	s := c.poolSession(NewID())
	mark := func(m *metav1.ObjectMeta) {
		m.Labels[LabelPoolState] = PoolStateWarm
		m.Labels[LabelPoolTemplate] = hash
		delete(m.Labels, apiv1.LabelOwnerID) // no one's, until claimed
	}
	secret := c.buildSecret(s, newPassword(), sp, "")
	mark(&secret.ObjectMeta)
	if _, err := c.kube.CoreV1().Secrets(c.cfg.Namespace).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pool secret: %w", err)
	}
	pod, err := c.buildPoolPod(s, sp)
	if err == nil {
		mark(&pod.ObjectMeta)
		_, err = c.kube.CoreV1().Pods(c.cfg.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	}
	if err != nil {
		// A quota or admission refusal: the next pass tries again; no Secret is left.
		if derr := c.kube.CoreV1().Secrets(c.cfg.Namespace).Delete(ctx, secret.Name, metav1.DeleteOptions{}); derr != nil && !apierrors.IsNotFound(derr) {
			c.log.Warn("delete the Secret of a pool pod not created failed; the pool will", "secret", secret.Name, "error", derr)
		}
		return fmt.Errorf("create pool pod: %w", err)
	}
	c.mu.Lock()
	c.poolCreated[s.ID] = c.now()
	c.mu.Unlock()
	c.log.Debug("created a warm pool pod", "pod", pod.Name, "template", hash)
	return nil
}

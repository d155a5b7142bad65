// Package sessions runs the session lifecycle on Kubernetes: it turns stored sessions
// into pods (with a per-session Secret and an optional workspace PVC), maps pod status
// back onto session state, stops idle sessions, deletes expired ones and repairs
// whatever a crash left half done.
//
// The database is the source of truth. Every operation first records its intent in the
// store (Pending, Stopping, Deleting) and only then touches Kubernetes, with steps that
// tolerate AlreadyExists and NotFound; the reconciler finishes any intent it finds, so
// a crash between two steps is repaired on the next start. Pods, Secrets and PVCs that
// carry this release's labels but have no session row are deleted.
//
// Failures a retry will not fix end in Failed with the kubelet's or API server's reason
// (ImagePullBackOff, CrashLoopBackOff, OOMKilled, InitFailed, PodRejected,
// StartTimeout, ...) and the pod is removed; the Secret and PVC stay so Start can try
// again. Waiting states that may heal (ErrImagePull, Unschedulable) keep the session
// Pending or Starting with the reason shown, until StartTimeout.
//
// With a health check set (SetHealthCheck, as the agent does), Running also means the
// session's OpenCode answers through the agent; until it does the session stays
// Starting with reason OpenCodeStarting.
package sessions

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"

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

// ErrInvalidState is returned (wrapped) when an operation does not apply to the
// session's current state, e.g. starting a session that is being deleted.
var ErrInvalidState = errors.New("invalid session state")

// ErrBusy is returned (wrapped) when another operation on the session, on this replica
// or another, held its lock for longer than an operation waits (LockWait).
var ErrBusy = errors.New("session busy")

// Config is what the controller needs to know about the cluster and the session pods.
type Config struct {
	// Namespace is where session pods, Secrets and PVCs live.
	Namespace string
	// Release is the app.kubernetes.io/instance value of every session object; objects
	// of other releases in the same namespace are never touched.
	Release string

	DataPlaneImage, DataPlaneInitImage, ImagePullPolicy string
	ImagePullSecrets                                    []string
	CPURequest, CPULimit, MemoryRequest, MemoryLimit    string
	NodeSelector                                        map[string]string
	Tolerations                                         []corev1.Toleration
	// StorageClass ("" = cluster default) and StorageSize of persistent workspaces.
	StorageClass, StorageSize string
	// CABundleConfigMap ("" = none) names a ConfigMap in Namespace whose CABundleKey
	// holds the PEM bundle of every CA sessions trust. It is mounted into both containers
	// and replaces the image's roots for git, curl/OpenSSL and (added to them) Node.
	CABundleConfigMap, CABundleKey string

	// DefaultIdleTimeout and DefaultTTL fill sessions created with zero values.
	DefaultIdleTimeout, DefaultTTL time.Duration
	// ReconcileInterval is how often every session and object is swept (default 30s).
	ReconcileInterval time.Duration
	// StartTimeout fails a session whose pod has not become ready this long after the
	// start (default 10m): an unschedulable or never-ready pod must not wait forever.
	StartTimeout time.Duration
	// MaxCreateAttempts is how many consecutive transient failures to create a
	// session's objects are retried before the session is marked Failed (default 5).
	MaxCreateAttempts int
	// Workers reconcile sessions in parallel (default 4).
	Workers int
	// LockWait bounds how long an operation waits for the session's lock, which
	// another operation (on any replica) holds while it runs (default 30s).
	LockWait time.Duration

	LiteLLMBaseURL, DefaultModel, ProviderJSON string
	// LiteLLMAPIKey goes into each per-session Secret and reaches OpenCode by env
	// reference; it is never written to a config file or a pod spec.
	LiteLLMAPIKey string

	// LeaderElection makes only the Lease holder reconcile; every replica serves the API.
	LeaderElection            bool
	LeaseNamespace, LeaseName string
	// LeaseDuration, RenewDeadline and RetryPeriod time the election (defaults 15s,
	// 10s, 2s, client-go's usual): a dead leader is replaced about LeaseDuration after
	// its last renewal.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Identity of this replica in the Lease (default: hostname).
	Identity string

	// Registerer receives the controller's metrics (default prometheus.DefaultRegisterer).
	Registerer prometheus.Registerer
}

func (c *Config) defaults() error {
	if c.Namespace == "" {
		return errors.New("session namespace is empty: set --session-namespace or --namespace")
	}
	if c.Release == "" {
		return errors.New("release is empty: set --release")
	}
	if c.DataPlaneImage == "" || c.DataPlaneInitImage == "" {
		return errors.New("data-plane images are not set: set --data-plane-image and --data-plane-init-image")
	}
	if c.ImagePullPolicy == "" {
		c.ImagePullPolicy = string(corev1.PullIfNotPresent)
	}
	if c.StorageSize == "" {
		c.StorageSize = "10Gi"
	}
	if c.CABundleConfigMap != "" {
		if c.CABundleKey == "" {
			c.CABundleKey = DefaultCABundleKey
		}
		if errs := validation.IsDNS1123Subdomain(c.CABundleConfigMap); len(errs) > 0 {
			return fmt.Errorf("--session-ca-configmap=%q is not a ConfigMap name: %s", c.CABundleConfigMap, strings.Join(errs, "; "))
		}
		if errs := validation.IsConfigMapKey(c.CABundleKey); len(errs) > 0 {
			return fmt.Errorf("--session-ca-key=%q is not a ConfigMap key: %s", c.CABundleKey, strings.Join(errs, "; "))
		}
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = 30 * time.Second
	}
	if c.StartTimeout <= 0 {
		c.StartTimeout = 10 * time.Minute
	}
	if c.MaxCreateAttempts <= 0 {
		c.MaxCreateAttempts = 5
	}
	if c.Workers <= 0 {
		c.Workers = 4
	}
	if c.LockWait <= 0 {
		c.LockWait = 30 * time.Second
	}
	if c.LeaderElection {
		if c.LeaseNamespace == "" || c.LeaseName == "" {
			return errors.New("leader election needs a Lease: set the lease namespace and name")
		}
		if c.Identity == "" {
			h, err := os.Hostname()
			if err != nil {
				return fmt.Errorf("leader-election identity: set --pod-name: %w", err)
			}
			c.Identity = h
		}
		if c.LeaseDuration <= 0 {
			c.LeaseDuration = 15 * time.Second
		}
		if c.RenewDeadline <= 0 {
			c.RenewDeadline = 10 * time.Second
		}
		if c.RetryPeriod <= 0 {
			c.RetryPeriod = 2 * time.Second
		}
		// client-go's own rules, said in our flags' names.
		if c.LeaseDuration <= c.RenewDeadline {
			return fmt.Errorf("leader election: the lease duration (%s) must be longer than the renew deadline (%s)", c.LeaseDuration, c.RenewDeadline)
		}
		if float64(c.RenewDeadline) <= 1.2*float64(c.RetryPeriod) {
			return fmt.Errorf("leader election: the renew deadline (%s) must be longer than 1.2 × the retry period (%s)", c.RenewDeadline, c.RetryPeriod)
		}
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.DefaultRegisterer
	}
	return nil
}

// Controller owns session state: the API calls Create/Stop/Start/Delete, Run
// reconciles everything else.
type Controller struct {
	cfg  Config
	kube kubernetes.Interface
	st   store.Store
	log  hclog.Logger
	now  func() time.Time

	factory      informers.SharedInformerFactory
	podLister    corelisters.PodLister
	secretLister corelisters.SecretLister
	pvcLister    corelisters.PersistentVolumeClaimLister
	synced       []cache.InformerSynced
	cachesSynced atomic.Bool

	broadcaster record.EventBroadcaster
	recorder    record.EventRecorder
	metrics     *metrics

	mu        sync.Mutex
	queue     workqueue.TypedRateLimitingInterface[string]
	baseCtx   context.Context
	readyHook func(ctx context.Context, s *store.Session)
	hookState map[string]hookMark // id → hook fired / in flight during this Running period
	// healthCheck, when set, must pass before a session turns Running (see
	// SetHealthCheck); health tracks it per session.
	healthCheck HealthCheck
	health      map[string]healthMark
	touched     map[string]touchMark
	failures    map[string]int // consecutive transient create failures
}

type hookMark struct{ fired, inflight bool }

type touchMark struct {
	at     time.Time
	source string
}

// touchEvery bounds activity writes per session and source; idle timeouts are minutes.
const touchEvery = 10 * time.Second

// New builds a controller; nothing runs until Run.
func New(cfg Config, kube kubernetes.Interface, st store.Store, log hclog.Logger) (*Controller, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	c := &Controller{
		cfg: cfg, kube: kube, st: st, log: log, now: time.Now,
		baseCtx:   context.Background(),
		hookState: map[string]hookMark{},
		health:    map[string]healthMark{},
		touched:   map[string]touchMark{},
		failures:  map[string]int{},
	}
	// Validate quantities now so a typo fails at start, not at the first session.
	if _, err := c.resources(); err != nil {
		return nil, err
	}
	if _, err := c.buildPVC(&store.Session{ID: "x"}); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registerer, st, log)
	if err != nil {
		return nil, err
	}
	c.metrics = m

	c.factory = informers.NewSharedInformerFactoryWithOptions(kube, 0,
		informers.WithNamespace(cfg.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = c.selector() }))
	pods := c.factory.Core().V1().Pods()
	secrets := c.factory.Core().V1().Secrets()
	pvcs := c.factory.Core().V1().PersistentVolumeClaims()
	c.podLister, c.secretLister, c.pvcLister = pods.Lister(), secrets.Lister(), pvcs.Lister()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    c.enqueueObject,
		UpdateFunc: func(_, n any) { c.enqueueObject(n) },
		DeleteFunc: c.enqueueObject,
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), secrets.Informer(), pvcs.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, fmt.Errorf("watch session objects: %w", err)
		}
		c.synced = append(c.synced, inf.HasSynced)
	}

	c.broadcaster = record.NewBroadcaster()
	c.recorder = c.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "cake-agents"})
	return c, nil
}

// SetReadyHook sets a function called when a session turns Running (once per Running
// period in this process; after an agent restart it is called again for Running
// sessions whose prompt was not sent, so the hook must check PromptSent). It runs in its
// own goroutine and is never called twice concurrently for one session.
func (c *Controller) SetReadyHook(f func(ctx context.Context, s *store.Session)) {
	c.mu.Lock()
	c.readyHook = f
	c.mu.Unlock()
}

// Run starts the informers and, on the leader, the reconciler; it returns when ctx is
// cancelled.
func (c *Controller) Run(ctx context.Context) error {
	c.mu.Lock()
	c.baseCtx = ctx
	c.mu.Unlock()
	sink := c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.kube.CoreV1().Events(c.cfg.Namespace)})
	defer sink.Stop()
	defer c.broadcaster.Shutdown()

	c.factory.Start(ctx.Done())
	defer c.factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("session informers did not sync: check the agent's RBAC on pods, secrets and persistentvolumeclaims in the session namespace")
	}
	c.cachesSynced.Store(true)
	c.log.Info("session caches synced", "namespace", c.cfg.Namespace, "release", c.cfg.Release)
	if err := c.checkCABundle(ctx); err != nil {
		// Not fatal: the API and running sessions work, and the ConfigMap may be on its
		// way (trust-manager); every new session reports it until then.
		c.log.Warn("sessions cannot start until the CA bundle is fixed", "error", err)
	}

	if !c.cfg.LeaderElection {
		c.reconcileLoop(ctx)
		return nil
	}
	return c.runElected(ctx)
}

// Ready reports whether the caches are synced and the Kubernetes API answers.
func (c *Controller) Ready(ctx context.Context) error {
	if !c.cachesSynced.Load() {
		return errors.New("session caches not synced yet")
	}
	_, err := c.kube.CoreV1().Pods(c.cfg.Namespace).List(ctx, metav1.ListOptions{LabelSelector: c.selector(), Limit: 1})
	if err != nil {
		return fmt.Errorf("kubernetes API: %w", err)
	}
	return nil
}

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

// Create stores s as Pending (filling ID, defaults and timestamps) and creates its
// Secret, PVC and Pod. It returns an error only when the session was not stored
// (quota, duplicate id, database down). Once stored, Kubernetes failures never remove
// the row: a transient failure leaves the session Pending for the reconciler to retry,
// and a permanent one (admission rejects the pod, invalid spec) removes whatever was
// created and leaves the session Failed with reason PodRejected and the API server's
// message (or CABundleMissing, before anything is created, when the configured CA
// bundle ConfigMap is not there) — the caller sees it in s.
func (c *Controller) Create(ctx context.Context, s *store.Session, maxActive int) error {
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
	if s.IdleTimeout == 0 {
		s.IdleTimeout = c.cfg.DefaultIdleTimeout
	}
	if s.TTL == 0 {
		s.TTL = c.cfg.DefaultTTL
	}
	now := c.now().UTC()
	s.State, s.Reason, s.Message = apiv1.StatePending, "", ""
	s.PodName, s.PodNamespace = PodName(s.ID), c.cfg.Namespace
	s.CreatedAt, s.UpdatedAt = now, now
	s.StartedAt, s.StoppedAt = &now, nil
	s.LastActivityAt, s.LastActivitySource = now, "create"
	// Locked before it exists: the reconciler may see the row the moment it is stored.
	unlock, err := c.lock(ctx, s.ID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := c.st.CreateSession(ctx, s, maxActive); err != nil {
		return fmt.Errorf("store session: %w", err)
	}
	failpoint.Hit(opCreate, "stored", s.ID)
	fresh, err := c.launch(ctx, s, opCreate)
	if fresh != nil {
		*s = *fresh
	}
	if err != nil {
		c.log.Warn("create session pod failed; the reconciler will retry", "session", s.ID, "error", err)
	}
	c.enqueue(s.ID)
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
	fresh, err := c.launch(ctx, s, opStart)
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

// event records a Kubernetes Event on the session's pod (by name, so it also works
// when the pod is already gone).
func (c *Controller) event(s *store.Session, typ, reason, msg string) {
	ref := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: PodName(s.ID), Namespace: c.cfg.Namespace}}
	c.recorder.Event(ref, typ, reason, msg)
}

func (c *Controller) forgetFailures(id string) {
	c.mu.Lock()
	delete(c.failures, id)
	c.mu.Unlock()
}

// permanent reports whether a Kubernetes error will not go away by retrying.
func permanent(err error) bool {
	var pe *permanentError
	return errors.As(err, &pe) || (apierrors.IsForbidden(err) && !deniedToAgent(err)) || apierrors.IsInvalid(err) ||
		apierrors.IsBadRequest(err) || apierrors.IsRequestEntityTooLargeError(err) || apierrors.IsMethodNotSupported(err)
}

// deniedToAgent reports whether a Forbidden answer is the API server's authorizer
// refusing the agent itself ("secrets is forbidden: User \"system:serviceaccount:...\"
// cannot create resource ..."), not an admission plugin refusing this session's objects
// (Pod Security, a quota). An API server that has just started answers so until its
// RBAC caches are filled, so such an answer is retried like any transient failure —
// MaxCreateAttempts in a row still fail the session when the agent's RBAC is wrong.
func deniedToAgent(err error) bool {
	return strings.Contains(apiMessage(err), ` is forbidden: User "`)
}

// unreachable reports whether err says the API server could not be reached, or asked to
// come back later, rather than that it refused this session. Such failures are retried
// without counting against MaxCreateAttempts (StartTimeout still bounds them): an API
// server outage must not fail every session created or started meanwhile.
func unreachable(err error) bool {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		apierrors.IsServiceUnavailable(err) || apierrors.IsServerTimeout(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) {
		return true
	}
	// client-go reports a request that got no answer (refused, reset, cut short, a TLS
	// failure) as a *url.Error; an answer comes as an APIStatus instead.
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &ue) || errors.As(err, &ne) || utilnet.IsConnectionRefused(err) || utilnet.IsProbableEOF(err)
}

// permanentError marks our own configuration errors (bad quantities, a missing CA
// bundle) as not retryable; reason, when set, replaces PodRejected on the session.
type permanentError struct {
	err    error
	reason string
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// apiMessage is the API server's message for err, without our wrapping.
func apiMessage(err error) string {
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}

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
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"

	"github.com/cakeai/cake-agents/agent/store"
)

// KubeQPS and KubeBurst are the client-side rate limit of the agent's Kubernetes client
// (client-go's default is 5 requests/s with bursts of 10; the agent's --kube-api-qps and
// --kube-api-burst replace them). A session costs about five requests over its life (its
// Secret and Pod created, then deleted, and a look at the pod after its delete); at 50/s
// every request of a busy agent waited about 20 ms for its turn, which was most of a
// create's time. The API server protects itself with API Priority and Fairness, so the
// client-side limit only keeps a runaway agent from flooding it. Events go through
// Config.EventClient, which has a limit of its own. Benchmarks give their raw client-go
// peer the same limit.
const (
	KubeQPS   = 200
	KubeBurst = 400
)

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
	// workCheck, when set, keeps a working session from being stopped as idle (see
	// SetWorkCheck).
	workCheck     WorkCheck
	health        map[string]healthMark
	touched       map[string]touchMark
	failures      map[string]int       // consecutive transient create failures
	expected      map[string]time.Time // id → when this process saw its pod created (see expect.go)
	poolKick      chan struct{}        // asks the pool loop for a pass (see kickPool)
	poolCreated   map[string]time.Time // pool pods created, by id, until the cache shows them
	keyDelivery   KeyDelivery          // gives a claimed pod's OpenCode its LiteLLM key (see SetKeyDelivery)
	workspacePrep WorkspacePrep        // clones a repository into a claimed pod (see SetWorkspacePrep)
	beforeDelete  func(ctx context.Context, id string)
	leaderTasks   []func(ctx context.Context)
}

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
		baseCtx:     context.Background(),
		hookState:   map[string]hookMark{},
		health:      map[string]healthMark{},
		touched:     map[string]touchMark{},
		failures:    map[string]int{},
		expected:    map[string]time.Time{},
		poolKick:    make(chan struct{}, 1),
		poolCreated: map[string]time.Time{},
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

// SetBeforePodDelete sets a function called before a session's running pod is deleted
// (a stop, a delete, the idle timeout, the TTL): the last moment its OpenCode can be
// asked anything, which the agent uses to record the conversation once more. It is
// called once per pod, under the session's lock, and should return within seconds.
func (c *Controller) SetBeforePodDelete(f func(ctx context.Context, id string)) {
	c.mu.Lock()
	c.beforeDelete = f
	c.mu.Unlock()
}

// AddLeaderTask adds a function run for the length of every leadership term of this
// process (ctx ends with the term): work only one replica should do at a time.
func (c *Controller) AddLeaderTask(f func(ctx context.Context)) {
	c.mu.Lock()
	c.leaderTasks = append(c.leaderTasks, f)
	c.mu.Unlock()
}

// Run starts the informers and, on the leader, the reconciler; it returns when ctx is
// cancelled.
func (c *Controller) Run(ctx context.Context) error {
	c.mu.Lock()
	c.baseCtx = ctx
	c.mu.Unlock()
	events := c.cfg.EventClient
	if events == nil {
		events = c.kube
	}
	sink := c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events(c.cfg.Namespace)})
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

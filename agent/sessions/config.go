package sessions

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/agent/litellm"
)

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

	// DefaultIdleTimeout, DefaultTTL and DefaultModel fill sessions created with zero
	// values; they are stored on the session, so the API and the pod read the same.
	DefaultIdleTimeout, DefaultTTL time.Duration
	DefaultModel                   string
	// WarmPoolSize is how many warm pool pods the leader keeps (0: none; the pool's pods
	// are deleted). See pool.go.
	WarmPoolSize int
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

	LiteLLMBaseURL, ProviderJSON string
	// LiteLLM, when set, gives every session its own virtual key, made with the master
	// key the client holds (which never leaves the agent) and put in the session's
	// Secret (SecretKeyLiteLLM), whence OpenCode reads it by env reference. The key is
	// deleted when the session stops or goes. Without it, or when the session's model
	// is not LiteLLM's, sessions get no key.
	LiteLLM *litellm.Client
	// LiteLLMSessionBudget and LiteLLMUserBudget (USD, 0 = none) cap what one session's
	// key, and all keys of one owner together, may spend.
	LiteLLMSessionBudget, LiteLLMUserBudget float64
	// LiteLLMUserBudgetPeriod (0 = never) resets an owner's LiteLLM spend every period,
	// so LiteLLMUserBudget is a budget per period rather than for all time.
	LiteLLMUserBudgetPeriod time.Duration
	// LiteLLMKeyDuration is how long a key lives at most (default: what is left of the
	// session's TTL, which also caps it), so a key outlives no agent that forgot it.
	LiteLLMKeyDuration time.Duration

	// GitHubHost is the GitHub host as in repository URLs ("github.com", or a GitHub
	// Enterprise host): a session's token for it is also given to the GitHub CLI.
	// GitHubApp, when set, gives a session on a repository of GitHubHost whose owner
	// has no credential for that host an
	// installation token of the App limited to the session's repository, in the Secret
	// like an owner's token. Tokens live an hour; each is replaced AppTokenRefresh
	// (default DefaultAppTokenRefresh) before it expires while the session is active,
	// and every start gets a new one.
	GitHubApp       AppTokens
	GitHubHost      string
	AppTokenRefresh time.Duration

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

	// EventClient, when set, records the controller's Kubernetes Events (default: the
	// controller's own client). The agent gives it a client of its own, with its own
	// client-side rate limit, as controller-runtime does for its recorders: Events are
	// sent in the background and must not take the tokens a burst of session creates
	// needs for their Secrets and Pods, nor wait behind them.
	EventClient kubernetes.Interface
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
	if c.AppTokenRefresh <= 0 {
		c.AppTokenRefresh = DefaultAppTokenRefresh
	}
	if c.GitHubApp != nil && c.GitHubHost == "" {
		return errors.New("a GitHub App needs the GitHub host its tokens are for")
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

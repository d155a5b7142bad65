package auth

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// Where the API server publishes the CA it trusts for client certificates.
const (
	ClientCANamespace = "kube-system"
	ClientCAConfigMap = "extension-apiserver-authentication"
	ClientCAKey       = "client-ca-file"
)

// groupAuthenticated is added to certificate users' groups, as the API server does, so
// RBAC bindings to system:authenticated mean the same here.
const groupAuthenticated = "system:authenticated"

// KubernetesConfig configures KubernetesAuthenticator.
type KubernetesConfig struct {
	// Client reviews tokens and watches the client-CA ConfigMap.
	Client kubernetes.Interface
	// Audiences, when set, are sent with every TokenReview and one of them must be
	// among the token's audiences. Empty means the API server's own audiences.
	Audiences []string
	// CacheTTL is how long a TokenReview answer is reused (default 10s); rejections
	// are reused for a fifth of it.
	CacheTTL time.Duration
	Log      hclog.Logger
}

// KubernetesAuthenticator accepts the caller's own Kubernetes credentials: a bearer
// token (checked with TokenReview, so exec plugins, OIDC and ServiceAccount tokens all
// work) or a TLS client certificate signed by the cluster's client CA.
//
// The TLS listener must request client certificates without verifying them
// (tls.Config.ClientAuth = tls.RequestClientCert): this authenticator verifies the
// chain against the current client CA, which can change at run time, and turns a bad
// certificate into a 401 that says why instead of a failed handshake.
type KubernetesAuthenticator struct {
	client    kubernetes.Interface
	audiences []string
	ttl       time.Duration
	log       hclog.Logger
	now       func() time.Time
	reviews   *ttlCache[tokenReviewResult]
	roots     atomic.Pointer[x509.CertPool]
	// certs remembers verified client certificate chains, so a client sending many
	// requests over one connection pays for the chain's signature check once per ttl.
	certs *ttlCache[verifiedCert]
	// syncTimeout bounds Start's wait for the first copy of the ConfigMap.
	syncTimeout time.Duration
}

type tokenReviewResult struct {
	id     *Identity
	reason string
}

// NewKubernetesAuthenticator returns the authenticator. Client certificates are
// accepted only after Start has loaded the client CA.
func NewKubernetesAuthenticator(cfg KubernetesConfig) *KubernetesAuthenticator {
	k := &KubernetesAuthenticator{
		client:    cfg.Client,
		audiences: slices.Clone(cfg.Audiences),
		ttl:       cfg.CacheTTL,
		log:       cfg.Log,
		now:       time.Now,
		reviews:   newTTLCache[tokenReviewResult](10000),
		certs:     newTTLCache[verifiedCert](10000),

		syncTimeout: time.Minute,
	}
	if k.ttl <= 0 {
		k.ttl = 10 * time.Second
	}
	if k.log == nil {
		k.log = hclog.NewNullLogger()
	}
	return k
}

// Name implements Authenticator.
func (k *KubernetesAuthenticator) Name() string {
	return "kubectl agents (your kubeconfig identity)"
}

// Start watches the client-CA ConfigMap until ctx ends and waits up to a minute for
// the first copy. An error means the CA could not be read yet, typically because the
// agent may not read the ConfigMap (bind the Role extension-apiserver-authentication-reader
// in kube-system to its ServiceAccount); the watch keeps retrying, and token
// authentication works meanwhile, so callers may log the error and carry on.
func (k *KubernetesAuthenticator) Start(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithNamespace(ClientCANamespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ClientCAConfigMap).String()
		}))
	inf := factory.Core().V1().ConfigMaps().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { k.onConfigMap(obj) },
		UpdateFunc: func(_, obj any) { k.onConfigMap(obj) },
		DeleteFunc: func(any) {
			k.log.Warn("client CA config map deleted, client certificates are rejected until it returns",
				"namespace", ClientCANamespace, "name", ClientCAConfigMap)
			k.roots.Store(nil)
		},
	}); err != nil {
		return fmt.Errorf("watch client CA config map: %w", err)
	}
	factory.Start(ctx.Done())
	// Bounded, so missing RBAC surfaces as an error instead of a silent hang; the
	// informer itself runs on until ctx ends and picks the CA up once allowed.
	waitCtx, cancel := context.WithTimeout(ctx, k.syncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(waitCtx.Done(), inf.HasSynced) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("read config map %s/%s: not synced before the deadline; check the agent may get/list/watch it (Role extension-apiserver-authentication-reader in %s)",
			ClientCANamespace, ClientCAConfigMap, ClientCANamespace)
	}
	if k.roots.Load() == nil {
		k.log.Warn("client CA not found, client certificates are rejected until it appears",
			"namespace", ClientCANamespace, "name", ClientCAConfigMap, "key", ClientCAKey)
	}
	return nil
}

func (k *KubernetesAuthenticator) onConfigMap(obj any) {
	cm, ok := obj.(*corev1.ConfigMap)
	if !ok {
		return
	}
	if err := k.setClientCA([]byte(cm.Data[ClientCAKey])); err != nil {
		// Keep the previous pool: a botched edit should not lock everyone out.
		k.log.Error("load client CA failed", "namespace", cm.Namespace, "name", cm.Name, "key", ClientCAKey, "error", err)
		return
	}
	k.log.Info("client CA loaded", "namespace", cm.Namespace, "name", cm.Name)
}

// setClientCA replaces the pool of CAs client certificates are verified against.
func (k *KubernetesAuthenticator) setClientCA(pemData []byte) error {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return fmt.Errorf("key %s holds no PEM certificate", ClientCAKey)
	}
	k.roots.Store(pool)
	return nil
}

// Authenticate implements Authenticator. An Authorization header decides over a
// client certificate: the caller chose it explicitly, and a personal access token in
// it is left to TokenAuthenticator even when a certificate is presented too.
func (k *KubernetesAuthenticator) Authenticate(r *http.Request) (*Identity, bool, error) {
	if tok, ok := bearerToken(r); ok {
		if strings.HasPrefix(tok, TokenPrefix) {
			return nil, false, nil
		}
		id, err := k.reviewToken(r.Context(), tok)
		if err != nil {
			return nil, false, err
		}
		return id, true, nil
	}
	if r.Header.Get("Authorization") != "" {
		return nil, false, nil
	}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		id, err := k.verifyCertificate(r.TLS.PeerCertificates)
		if err != nil {
			return nil, false, err
		}
		return id, true, nil
	}
	return nil, false, nil
}

func (k *KubernetesAuthenticator) reviewToken(ctx context.Context, token string) (*Identity, error) {
	sum := sha256.Sum256([]byte(token))
	key := hex.EncodeToString(sum[:])
	if res, ok := k.reviews.get(key); ok {
		return res.identity()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	tr, err := k.client.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: k.audiences},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("review bearer token with the Kubernetes API: %w", err)
	}
	res := k.judge(tr.Status)
	ttl := k.ttl
	if res.id == nil {
		ttl /= 5
	}
	k.reviews.put(key, res, ttl)
	return res.identity()
}

func (k *KubernetesAuthenticator) judge(st authnv1.TokenReviewStatus) tokenReviewResult {
	if !st.Authenticated {
		reason := "the Kubernetes API did not accept the bearer token"
		if st.Error != "" {
			reason += ": " + st.Error
		}
		return tokenReviewResult{reason: reason + "; refresh your kubeconfig credentials"}
	}
	if len(k.audiences) > 0 && !slices.ContainsFunc(st.Audiences, func(a string) bool { return slices.Contains(k.audiences, a) }) {
		return tokenReviewResult{reason: fmt.Sprintf("the bearer token is not meant for this agent (audiences %v, want one of %v)", st.Audiences, k.audiences)}
	}
	if st.User.Username == "" {
		return tokenReviewResult{reason: "the Kubernetes API accepted the bearer token but named no user"}
	}
	id := &Identity{
		Username: st.User.Username,
		UID:      st.User.UID,
		Groups:   slices.Clone(st.User.Groups),
		Source:   SourceKubernetes,
	}
	if len(st.User.Extra) > 0 {
		id.Extra = make(map[string][]string, len(st.User.Extra))
		for k, v := range st.User.Extra {
			id.Extra[k] = slices.Clone(v)
		}
	}
	return tokenReviewResult{id: id}
}

// identity returns a fresh copy, so a request that mutates its Identity (the
// middleware sets UserID and Admin) never races with another sharing the cache entry.
func (res tokenReviewResult) identity() (*Identity, error) {
	if res.id == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnauthenticated, res.reason)
	}
	id := *res.id
	id.Groups = slices.Clone(res.id.Groups)
	if res.id.Extra != nil {
		id.Extra = make(map[string][]string, len(res.id.Extra))
		for k, v := range res.id.Extra {
			id.Extra[k] = slices.Clone(v)
		}
	}
	return &id, nil
}

// verifiedCert is a chain verifyCertificate accepted, against which client CA pool.
type verifiedCert struct {
	id    *Identity
	roots *x509.CertPool
}

func (k *KubernetesAuthenticator) verifyCertificate(chain []*x509.Certificate) (*Identity, error) {
	roots := k.roots.Load()
	if roots == nil {
		return nil, fmt.Errorf("%w: client certificates cannot be verified yet: the cluster's client CA (config map %s/%s) is not loaded; use a bearer token",
			ErrUnauthenticated, ClientCANamespace, ClientCAConfigMap)
	}
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	key := hex.EncodeToString(h.Sum(nil))
	// Reused only under the same client CA (a reload verifies again) and never past
	// the certificate's expiry (the ttl is cut to it).
	if v, ok := k.certs.get(key); ok && v.roots == roots {
		return tokenReviewResult{id: v.id}.identity()
	}
	id, err := k.verifyChain(roots, chain)
	if err != nil {
		return nil, err
	}
	k.certs.put(key, verifiedCert{id: id, roots: roots}, min(k.ttl, chain[0].NotAfter.Sub(k.now())))
	return tokenReviewResult{id: id}.identity()
}

// verifyChain checks chain against the cluster's client CA pool roots, as the API
// server does, and returns the identity the leaf names.
func (k *KubernetesAuthenticator) verifyChain(roots *x509.CertPool, chain []*x509.Certificate) (*Identity, error) {
	leaf := chain[0]
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   k.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, fmt.Errorf("%w: client certificate %q is not valid for this cluster: %v", ErrUnauthenticated, leaf.Subject.CommonName, err)
	}
	if leaf.Subject.CommonName == "" {
		return nil, fmt.Errorf("%w: client certificate has no common name (the user name)", ErrUnauthenticated)
	}
	groups := slices.Clone(leaf.Subject.Organization)
	if !slices.Contains(groups, groupAuthenticated) {
		groups = append(groups, groupAuthenticated)
	}
	return &Identity{
		Username: leaf.Subject.CommonName,
		Groups:   groups,
		Source:   SourceKubernetes,
	}, nil
}

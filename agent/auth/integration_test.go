package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/agent/audit"
	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

func TestServiceAccountTokenReview(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	cfg := c.ServiceAccountConfig(t, ns, "robot")
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: c.AdminClient()})

	id, ok, err := k.Authenticate(bearerRequest(cfg.BearerToken))
	if err != nil || !ok {
		t.Fatalf("ServiceAccount token: ok=%v err=%v", ok, err)
	}
	if want := "system:serviceaccount:" + ns + ":robot"; id.Username != want || id.UID == "" {
		t.Errorf("identity = %+v, want user %s with a uid", id, want)
	}
	for _, g := range []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"} {
		if !slices.Contains(id.Groups, g) {
			t.Errorf("groups %v lack %s", id.Groups, g)
		}
	}
	if _, _, err := k.Authenticate(bearerRequest(cfg.BearerToken[:len(cfg.BearerToken)-4] + "AAAA")); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("tampered token: err = %v, want ErrUnauthenticated", err)
	}

	// With audiences configured, a token minted for the API server is not for us.
	strict := NewKubernetesAuthenticator(KubernetesConfig{Client: c.AdminClient(), Audiences: []string{"cake-agents.example"}})
	if _, _, err := strict.Authenticate(bearerRequest(cfg.BearerToken)); !errors.Is(err, ErrUnauthenticated) {
		t.Errorf("token for another audience: err = %v, want ErrUnauthenticated", err)
	}
}

func TestClientCertificateFromClusterCA(t *testing.T) {
	c := testcluster.Get(t)
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: c.AdminClient()})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	startCtx, startCancel := context.WithTimeout(ctx, time.Minute)
	defer startCancel()
	if err := k.Start(startCtx); err != nil {
		t.Fatalf("start: %v", err)
	}
	if k.roots.Load() == nil {
		t.Fatalf("client CA not loaded from %s/%s", ClientCANamespace, ClientCAConfigMap)
	}
	srv := tlsServer(t, k)

	user := c.UserConfig(t, "alice", "team-a", "team-b")
	cert, err := tls.X509KeyPair(user.CertData, user.KeyData)
	if err != nil {
		t.Fatal(err)
	}
	code, body := getWithCert(t, srv, &cert, "")
	if code != http.StatusOK {
		t.Fatalf("certificate from the cluster CA: %d %s", code, body)
	}
	var id Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatal(err)
	}
	slices.Sort(id.Groups)
	if id.Username != "alice" || !slices.Equal(id.Groups, []string{"system:authenticated", "team-a", "team-b"}) {
		t.Fatalf("identity = %+v, want alice in team-a, team-b", id)
	}

	forged := newTestCA(t).issue(t, "alice", []string{"system:masters"}, x509.ExtKeyUsageClientAuth, time.Now().Add(time.Hour))
	if code, body := getWithCert(t, srv, &forged, ""); code != http.StatusUnauthorized {
		t.Fatalf("certificate from another CA: %d %s, want 401", code, body)
	}
}

// grant allows subject verbs on sessions.agents.cake.ai in ns ("" cluster-wide) through
// a (Cluster)Role and binding named name, removed when the test ends; it returns once the
// API server enforces them.
func grant(t *testing.T, c *testcluster.Cluster, ns, name string, verbs []string, subject rbacv1.Subject) {
	t.Helper()
	c.Grant(t, ns, name, subject, rbacv1.PolicyRule{APIGroups: []string{apiv1.Group}, Resources: []string{apiv1.Resource}, Verbs: verbs})
}

func TestSubjectAccessReview(t *testing.T) {
	c := testcluster.Get(t)
	client := c.AdminClient()
	ns := c.NewNamespace(t, nil)
	// Cluster-scoped names carry the namespace so parallel test binaries never collide.
	user := "sar-user-" + ns
	adminUser := "sar-admin-" + ns
	group := "sar-group-" + ns
	grant(t, c, "", "cake-agents-user-"+ns, []string{"get", "list", "create"}, rbacv1.Subject{Kind: rbacv1.UserKind, Name: user})
	grant(t, c, "", "cake-agents-admin-"+ns, []string{"*"}, rbacv1.Subject{Kind: rbacv1.UserKind, Name: adminUser})
	grant(t, c, ns, "attachers", []string{"attach"}, rbacv1.Subject{Kind: rbacv1.GroupKind, Name: group})

	// A tiny TTL so every question reaches the API server; caching has its own test below.
	a := NewSARAuthorizer(SARConfig{Client: client, Namespace: ns, AdminGroups: []string{"platform-admins"}, CacheTTL: time.Nanosecond})
	cluster := NewSARAuthorizer(SARConfig{Client: client, CacheTTL: time.Nanosecond})
	plain := &Identity{Username: user, Groups: []string{"system:authenticated"}}
	member := &Identity{Username: "someone-" + ns, Groups: []string{group, "system:authenticated"}}
	admin := &Identity{Username: adminUser, Groups: []string{"system:authenticated"}}

	for _, tc := range []struct {
		name  string
		authz *SARAuthorizer
		id    *Identity
		verb  string
		want  bool
	}{
		{"user may get (ClusterRoleBinding)", a, plain, apiv1.VerbGet, true},
		{"user may list", a, plain, apiv1.VerbList, true},
		{"user may not delete", a, plain, apiv1.VerbDelete, false},
		{"user may not attach", a, plain, apiv1.VerbAttach, false},
		{"ClusterRoleBinding counts cluster-wide too", cluster, plain, apiv1.VerbCreate, true},
		{"group member may attach in the namespace (RoleBinding)", a, member, apiv1.VerbAttach, true},
		{"RoleBinding does not count cluster-wide", cluster, member, apiv1.VerbAttach, false},
		{"group member may not create", a, member, apiv1.VerbCreate, false},
		{"admin may delete", a, admin, apiv1.VerbDelete, true},
		{"stranger may not get", a, &Identity{Username: "stranger-" + ns}, apiv1.VerbGet, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, reason, err := tc.authz.Authorize(context.Background(), tc.id, tc.verb)
			if err != nil {
				t.Fatal(err)
			}
			if ok != tc.want {
				t.Fatalf("allowed = %v (%s), want %v", ok, reason, tc.want)
			}
			if !ok && reason == "" {
				t.Error("a denial without a reason")
			}
		})
	}

	for _, tc := range []struct {
		name string
		id   *Identity
		want bool
	}{
		{"RBAC verb * makes an admin", admin, true},
		{"ordinary user is no admin", plain, false},
		{"admin group without RBAC", &Identity{Username: "boss-" + ns, Groups: []string{"platform-admins"}}, true},
		{"system:masters is allowed everything by the API server", &Identity{Username: "root-" + ns, Groups: []string{"system:masters"}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Admin(context.Background(), tc.id)
			if err != nil || got != tc.want {
				t.Fatalf("Admin = %v, %v; want %v", got, err, tc.want)
			}
		})
	}

	// Answers are cached: after the grant is gone, the cached "allowed" still holds
	// until the TTL passes, then the revocation shows.
	cached := NewSARAuthorizer(SARConfig{Client: client, Namespace: ns, CacheTTL: time.Hour})
	now := time.Now()
	cached.cache.now = func() time.Time { return now }
	if ok, _, _ := cached.Authorize(context.Background(), member, apiv1.VerbAttach); !ok {
		t.Fatal("member not allowed to attach")
	}
	if err := client.RbacV1().RoleBindings(ns).Delete(context.Background(), "attachers", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, _, _ := cached.Authorize(context.Background(), member, apiv1.VerbAttach); !ok {
		t.Fatal("cached answer not used")
	}
	now = now.Add(2 * time.Hour)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, _, err := cached.Authorize(context.Background(), member, apiv1.VerbAttach)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("revoked RoleBinding still allows attach after the cache expired")
		}
		now = now.Add(2 * time.Hour) // the allowed answer was cached again; skip past it
		time.Sleep(100 * time.Millisecond)
	}
}

// TestChainOnCluster runs the whole chain as the agent will: header, Kubernetes and
// token authenticators, admin resolution by SAR, users in the store, over TLS.
func TestChainOnCluster(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	st, _ := newStore(t)
	client := c.AdminClient()
	saUser := "system:serviceaccount:" + ns + ":ops"
	grant(t, c, ns, "admins", []string{"*"}, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "ops", Namespace: ns})

	ha, err := NewHeaderAuthenticator(headerConfig())
	if err != nil {
		t.Fatal(err)
	}
	k := NewKubernetesAuthenticator(KubernetesConfig{Client: client})
	authz := NewSARAuthorizer(SARConfig{Client: client, Namespace: ns, CacheTTL: time.Nanosecond})

	mw := NewMiddleware([]Authenticator{ha, k, NewTokenAuthenticator(st, nil)}, st, audit.NewRecorder(st, nil), nil, WithAdminResolver(authz))
	srv := httptestTLS(t, audit.RequestIDMiddleware(mw.Wrap(whoami)))

	sa := c.ServiceAccountConfig(t, ns, "ops")
	code, body := getWithCert(t, srv, nil, sa.BearerToken)
	if code != http.StatusOK {
		t.Fatalf("ServiceAccount token through the chain: %d %s", code, body)
	}
	var id Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatal(err)
	}
	if id.Username != saUser || !id.Admin || id.UserID == "" {
		t.Fatalf("identity = %+v, want admin %s with a user id", id, saUser)
	}
	u, err := st.GetUser(context.Background(), id.UserID)
	if err != nil || u.Source != SourceKubernetes || u.Subject != saUser || !u.Admin {
		t.Fatalf("stored user = %+v, err %v", u, err)
	}

	// The same user's personal access token resolves to the same stored user.
	secret, _, err := IssueToken(context.Background(), st, id.UserID, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	code, body = getWithCert(t, srv, nil, secret)
	if code != http.StatusOK || !strings.Contains(body, id.UserID) || !strings.Contains(body, `"Admin":true`) {
		t.Fatalf("personal access token: %d %s", code, body)
	}

	// Identity headers arriving over loopback (where port-forwards land) are refused
	// even next to a valid Kubernetes token.
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	req.Header.Set("Authorization", "Bearer "+sa.BearerToken)
	req.Header.Set("X-Auth-Request-Email", "admin@example.com")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("identity headers from loopback: %d, want 401", resp.StatusCode)
	}
}

// TestTokenStopsWhenTheOwnerLosesAccess: a ServiceAccount signs in with its Kubernetes
// token, creates a personal access token, and uses it; once RBAC no longer lets the
// ServiceAccount get sessions, the personal access token is refused too, although it has
// not expired (SubjectAccessReview against the real API server, through the whole chain).
func TestTokenStopsWhenTheOwnerLosesAccess(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	st, _ := newStore(t)
	client := c.AdminClient()
	grant(t, c, ns, "users", []string{"get", "list"}, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "ci", Namespace: ns})

	k := NewKubernetesAuthenticator(KubernetesConfig{Client: client})
	authz := NewSARAuthorizer(SARConfig{Client: client, Namespace: ns, CacheTTL: time.Nanosecond})
	tokens := NewTokenAuthenticator(st, nil, WithOwnerAccess(authz))
	mw := NewMiddleware([]Authenticator{k, tokens}, st, audit.NewRecorder(st, nil), nil, WithAdminResolver(authz))
	srv := httptestTLS(t, audit.RequestIDMiddleware(mw.Wrap(whoami)))

	sa := c.ServiceAccountConfig(t, ns, "ci")
	code, body := getWithCert(t, srv, nil, sa.BearerToken)
	if code != http.StatusOK {
		t.Fatalf("ServiceAccount token: %d %s", code, body)
	}
	var id Identity
	if err := json.Unmarshal([]byte(body), &id); err != nil {
		t.Fatal(err)
	}
	secret, _, err := IssueToken(context.Background(), st, id.UserID, "ci", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, body := getWithCert(t, srv, nil, secret); code != http.StatusOK || !strings.Contains(body, id.UserID) {
		t.Fatalf("personal access token while the owner may get sessions: %d %s", code, body)
	}

	if err := client.RbacV1().RoleBindings(ns).Delete(context.Background(), "users", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The API server's RBAC cache follows the deletion by watch: wait for it, not a time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body = getWithCert(t, srv, nil, secret)
		if code != http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the personal access token still works 30s after its owner lost access")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if want := "its owner system:serviceaccount:" + ns + ":ci may not get sessions.agents.cake.ai any more"; code != http.StatusUnauthorized || !strings.Contains(body, want) {
		t.Fatalf("after the owner lost access: %d %s, want 401 saying %q", code, body, want)
	}
}

package auth

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// VerbAll is the SAR verb asked to decide whether a caller is an agent admin: RBAC
// allows it only to rules that grant "*" on sessions.agents.cake.ai (or to
// system:masters), which is what the chart's cake-agents-admin ClusterRole grants.
const VerbAll = "*"

// SARConfig configures SARAuthorizer.
type SARConfig struct {
	Client kubernetes.Interface
	// Namespace is put in every review. Set it to the agent's namespace so both
	// ClusterRoleBindings and RoleBindings in that namespace grant access (and
	// `kubectl auth can-i create sessions.agents.cake.ai -n <that namespace>` agrees);
	// empty asks cluster-wide, where only ClusterRoleBindings count.
	Namespace string
	// AdminGroups make their members admins without any RBAC grant.
	AdminGroups []string
	// CacheTTL is how long an answer is reused (default 10s).
	CacheTTL time.Duration
	Log      hclog.Logger
}

// SARAuthorizer asks the Kubernetes API, with SubjectAccessReview, whether a caller
// may use a verb on the virtual resource sessions.agents.cake.ai.
type SARAuthorizer struct {
	client      kubernetes.Interface
	namespace   string
	adminGroups []string
	ttl         time.Duration
	log         hclog.Logger
	cache       *ttlCache[sarResult]
}

type sarResult struct {
	allowed bool
	reason  string
}

// NewSARAuthorizer returns the authorizer.
func NewSARAuthorizer(cfg SARConfig) *SARAuthorizer {
	a := &SARAuthorizer{
		client:      cfg.Client,
		namespace:   cfg.Namespace,
		adminGroups: slices.Clone(cfg.AdminGroups),
		ttl:         cfg.CacheTTL,
		log:         cfg.Log,
		cache:       newTTLCache[sarResult](10000),
	}
	if a.ttl <= 0 {
		a.ttl = 10 * time.Second
	}
	if a.log == nil {
		a.log = hclog.NewNullLogger()
	}
	return a
}

// Authorize implements Authorizer. Both answers are cached briefly; errors are not,
// and mean "could not decide" — callers must deny and report the outage.
func (a *SARAuthorizer) Authorize(ctx context.Context, id *Identity, verb string) (bool, string, error) {
	return a.review(ctx, id, verb, "")
}

// AuthorizeSession asks whether id may perform verb on the session named sessionID: RBAC
// allows it with a rule for sessions in general or one listing the id in resourceNames.
func (a *SARAuthorizer) AuthorizeSession(ctx context.Context, id *Identity, verb, sessionID string) (bool, string, error) {
	return a.review(ctx, id, verb, sessionID)
}

func (a *SARAuthorizer) review(ctx context.Context, id *Identity, verb, name string) (bool, string, error) {
	if id == nil || id.Username == "" {
		return false, "not authenticated", nil
	}
	key := sarKey(id, verb) + fmt.Sprintf("%d:%s;", len(name), name)
	if res, ok := a.cache.get(key); ok {
		return res.allowed, res.reason, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	sar := &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User:   id.Username,
			UID:    id.UID,
			Groups: id.Groups,
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: a.namespace,
				Group:     apiv1.Group,
				Resource:  apiv1.Resource,
				Verb:      verb,
				Name:      name,
			},
		},
	}
	if len(id.Extra) > 0 {
		sar.Spec.Extra = make(map[string]authzv1.ExtraValue, len(id.Extra))
		for k, v := range id.Extra {
			sar.Spec.Extra[k] = authzv1.ExtraValue(v)
		}
	}
	out, err := a.client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("ask the Kubernetes API whether %s may %s %s.%s: %w", id.Username, verb, apiv1.Resource, apiv1.Group, err)
	}
	res := sarResult{allowed: out.Status.Allowed && !out.Status.Denied, reason: out.Status.Reason}
	if !res.allowed && res.reason == "" {
		res.reason = fmt.Sprintf("RBAC does not allow %s to %s %s.%s; ask an admin to bind the cake-agents-user ClusterRole", id.Username, verb, apiv1.Resource, apiv1.Group)
	}
	if out.Status.EvaluationError != "" {
		a.log.Warn("subject access review evaluation error", "user", id.Username, "verb", verb, "error", out.Status.EvaluationError)
	}
	a.cache.put(key, res, a.ttl)
	return res.allowed, res.reason, nil
}

// Admin reports whether id may act on every session: a member of an admin group, or
// RBAC grants verb "*" on sessions.agents.cake.ai.
func (a *SARAuthorizer) Admin(ctx context.Context, id *Identity) (bool, error) {
	if id == nil {
		return false, nil
	}
	for _, g := range id.Groups {
		if slices.Contains(a.adminGroups, g) {
			return true, nil
		}
	}
	ok, _, err := a.Authorize(ctx, id, VerbAll)
	return ok, err
}

// sarKey covers everything the review depends on, so two identities that differ in
// any attribute never share an answer.
func sarKey(id *Identity, verb string) string {
	var b strings.Builder
	field := func(s string) {
		// Length-prefixed so no choice of values can make two keys collide.
		fmt.Fprintf(&b, "%d:%s;", len(s), s)
	}
	field(verb)
	field(id.Username)
	field(id.UID)
	groups := slices.Clone(id.Groups)
	sort.Strings(groups)
	field(fmt.Sprint(len(groups)))
	for _, g := range groups {
		field(g)
	}
	keys := make([]string, 0, len(id.Extra))
	for k := range id.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	field(fmt.Sprint(len(keys)))
	for _, k := range keys {
		field(k)
		field(fmt.Sprint(len(id.Extra[k])))
		for _, v := range id.Extra[k] {
			field(v)
		}
	}
	return b.String()
}

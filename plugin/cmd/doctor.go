package cmd

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/pkg/version"
)

// ForgedIdentityHeader is the identity header an authenticating proxy (oauth2-proxy)
// sets; doctor sends a forged one to prove the agent refuses it from a port-forward, when
// the agent does not publish the header names it reads (agents that predate
// apiv1.HeaderAuthInfo).
const ForgedIdentityHeader = "X-Auth-Request-Email"

// DoctorOptions are the inputs of `doctor`.
type DoctorOptions struct {
	genericiooptions.IOStreams
	Factory *Factory
	// Kube checks RBAC with SelfSubjectAccessReview; nil skips those checks (--server
	// mode has no kubeconfig to speak of).
	Kube kubernetes.Interface

	failed int
}

// NewCmdDoctor returns `doctor`.
func NewCmdDoctor(f *Factory, streams genericiooptions.IOStreams) *cobra.Command {
	o := &DoctorOptions{IOStreams: streams, Factory: f}
	return &cobra.Command{
		Use:   "doctor",
		Short: "Check that the plugin can reach the agent and you can use it",
		Long: `Check, one line each: that the agent can be reached (and how), the plugin and
agent versions, the agent's own readiness (database, cluster), who you are to the
agent, your RBAC for the common verbs on sessions.agents.cake.ai and for reaching the
agent (list pods, create pods/portforward), where the agent believes identity headers
from (loopback, the pod network, or only the authenticating proxy), that it refuses
forged identity headers, under the names it is configured with, sent through the
port-forward, and whether each integration (Slack, Linear) is enabled and reachable
from the agent with its token (Slack's auth.test, Linear's viewer, asked by the agent).

It exits non-zero when a check fails.`,
		Example: `  kubectl agents doctor
  kubectl agents doctor --agent-namespace platform`,
		Args: cobra.NoArgs,
		RunE: runOptions(o),
	}
}

// Complete builds the cluster client (no request yet) when the agent is reached through it.
func (o *DoctorOptions) Complete(_ *cobra.Command, _ []string) error {
	if o.Kube != nil || o.Factory.Client != nil || o.Factory.serverURL() != "" {
		return nil
	}
	kube, _, err := o.Factory.Kube()
	if err != nil {
		return err
	}
	o.Kube = kube
	return nil
}

func (o *DoctorOptions) report(status, format string, args ...any) {
	if status == "FAIL" {
		o.failed++
	}
	fmt.Fprintf(o.Out, "%-7s%s\n", "["+status+"]", fmt.Sprintf(format, args...))
}

// Run performs the checks.
func (o *DoctorOptions) Run(ctx context.Context) error {
	c, err := o.Factory.Agent(ctx)
	if err != nil {
		o.report("FAIL", "agent reachable: %v", err)
		o.checkRBAC(ctx)
		return o.result()
	}
	how := o.Factory.Mode()
	if err := c.Healthz(ctx); err != nil {
		o.report("FAIL", "agent reachable (%s): %v", how, err)
		o.checkRBAC(ctx)
		return o.result()
	}
	if tun := o.Factory.tunnel(); tun != nil {
		// The pod is picked on the first dial, which Healthz just made.
		how += " (pod " + tun.Pod() + ")"
	}
	o.report("ok", "agent reachable: %s", how)

	pluginVersion := version.Get().Version
	if v, err := c.Version(ctx); err != nil {
		o.report("FAIL", "agent version: %v", err)
	} else if w := version.Skew(pluginVersion, v.Version); w != "" {
		o.report("warn", "versions: %s", w)
	} else {
		o.report("ok", "versions: plugin %s, agent %s", pluginVersion, v.Version)
	}

	ready, err := c.Readyz(ctx)
	switch {
	case ready != nil:
		names := make([]string, 0, len(ready.Checks))
		for k := range ready.Checks {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if v := ready.Checks[k]; v == "ok" {
				o.report("ok", "agent readiness %s: ok", k)
			} else {
				o.report("FAIL", "agent readiness %s: %s", k, v)
			}
		}
		if !ready.Ready && len(names) == 0 {
			o.report("FAIL", "agent readiness: not ready")
		}
	default:
		o.report("FAIL", "agent readiness: %v", err)
	}

	var info *apiv1.HeaderAuthInfo
	if who, err := c.WhoAmI(ctx); err != nil {
		o.report("FAIL", "identity: %v", explain(o.Factory, err))
	} else {
		var allowed, denied []string
		for _, v := range []string{apiv1.VerbGet, apiv1.VerbList, apiv1.VerbCreate, apiv1.VerbDelete} {
			if who.Permissions[v] {
				allowed = append(allowed, v)
			} else {
				denied = append(denied, v)
			}
		}
		o.report("ok", "identity: %s (%s, authenticated by %s)", displayUser(who.User.Email, who.User.DisplayName, who.Username), who.Username, who.Authenticator)
		if len(denied) > 0 {
			o.report("warn", "the agent lets you %s but not %s sessions", orNothing(allowed), strings.Join(denied, ", "))
		}
		o.reportHeaderAuth(who.HeaderAuth, who.HeaderAuthInfo)
		info = who.HeaderAuthInfo
		// Owners drive their own sessions; attach is what lets one drive other people's.
		if who.Permissions[apiv1.VerbAttach] || who.Permissions["admin"] {
			o.report("ok", "driving sessions: your own, and other users' public ones (RBAC grants you attach)")
		} else {
			o.report("ok", "driving sessions: your own; other users' public ones you may read, not drive (RBAC verb attach, e.g. the cake-agents-attach ClusterRole, would allow it)")
		}
	}

	o.checkRBAC(ctx)
	o.checkForgedHeaders(ctx, c, info)
	o.checkIntegrations(ctx, c)
	return o.result()
}

// checkIntegrations reports each chat and issue-tracker integration (Slack, Linear): off
// is no warning; configured but not enabled is one (someone meant to turn it on);
// enabled but unable to reach its service fails, since people mentioning the bot or
// assigning issues get no answer.
func (o *DoctorOptions) checkIntegrations(ctx context.Context, c *client.Client) {
	list, err := c.Integrations(ctx)
	if client.IsNotFound(err) {
		return // an agent older than the integrations
	}
	if err != nil {
		o.report("warn", "integrations: %v", explain(o.Factory, err))
		return
	}
	for _, in := range list.Items {
		name := integrationName(in.Name)
		switch {
		case in.Enabled && in.Reachable:
			o.report("ok", "%s: enabled and reachable: %s", name, in.Detail)
		case in.Enabled:
			o.report("FAIL", "%s: enabled but not reachable from the agent: %s", name, in.Detail)
		case in.Configured:
			o.report("warn", "%s: %s", name, in.Detail)
		default:
			o.report("skip", "%s: %s", name, in.Detail)
		}
		if in.Enabled && in.Warning != "" {
			o.report("warn", "%s: %s", name, in.Warning)
		}
	}
}

// integrationName is an integration's name as people write it.
func integrationName(n string) string {
	switch n {
	case "linear":
		return "Linear"
	case "slack":
		return "Slack"
	}
	return n
}

// reportHeaderAuth says whether people signing in through the authenticating proxy can
// get in, and whom else the agent would believe. Kubeconfig users are unaffected either
// way, which is why an inert header auth is easy to miss: the agent runs, and only the
// browser users are refused; and why a too-wide trust is: everything works, for forgers too.
func (o *DoctorOptions) reportHeaderAuth(state apiv1.HeaderAuthState, info *apiv1.HeaderAuthInfo) {
	switch state {
	case apiv1.HeaderAuthNoTrustedProxy:
		o.report("warn", "header auth: enabled but inert: no trusted proxy network is set, so every request signed in through the authenticating proxy is refused (401); set headerAuth.trustedProxyCIDRs in the chart's values (agent flag --trusted-proxy-cidrs) to the proxy's network")
	case apiv1.HeaderAuthEnabled:
		if info == nil {
			// An agent that predates HeaderAuthInfo: it only says it is on.
			o.report("ok", "header auth: identity headers are believed from the trusted proxy networks only")
			return
		}
		status, line := judgeTrust(info.TrustedProxyCIDRs).report(info)
		o.report(status, "%s", line)
	}
	// Disabled, or an agent that does not report it: nothing to say.
}

// forgedHeaders are the identity headers doctor forges: every one the agent reads, under
// its configured names, or oauth2-proxy's email header for agents that do not say.
func forgedHeaders(info *apiv1.HeaderAuthInfo, email string) http.Header {
	h := http.Header{}
	if info == nil {
		h.Set(ForgedIdentityHeader, email)
		return h
	}
	if info.EmailHeader != "" {
		h.Set(info.EmailHeader, email)
	}
	if info.UserHeader != "" {
		h.Set(info.UserHeader, "forged-by-kubectl-agents-doctor")
	}
	if info.JWTHeader != "" {
		// Well-formed and unsigned: the agent must refuse it from here whether or not it
		// verifies JWTs.
		b64 := base64.RawURLEncoding.EncodeToString
		h.Set(info.JWTHeader, b64([]byte(`{"alg":"none","typ":"JWT"}`))+"."+b64([]byte(`{"email":"`+email+`"}`))+".")
	}
	return h
}

func orNothing(verbs []string) string {
	if len(verbs) == 0 {
		return "do nothing with"
	}
	return strings.Join(verbs, ", ")
}

func (o *DoctorOptions) result() error {
	if o.failed > 0 {
		return fmt.Errorf("%d check(s) failed", o.failed)
	}
	return nil
}

// checkRBAC asks the API server what the user may do, the same questions the agent
// asks with SubjectAccessReview and the port-forward needs.
func (o *DoctorOptions) checkRBAC(ctx context.Context) {
	if o.Kube == nil {
		o.report("skip", "RBAC: not checked when the agent is reached with --server")
		return
	}
	ns := o.Factory.Namespace()
	type question struct {
		label string
		attrs authorizationv1.ResourceAttributes
		need  bool
	}
	var qs []question
	for _, v := range []string{apiv1.VerbGet, apiv1.VerbList, apiv1.VerbCreate, apiv1.VerbDelete, apiv1.VerbAttach} {
		qs = append(qs, question{v + " " + apiv1.Resource + "." + apiv1.Group,
			authorizationv1.ResourceAttributes{Verb: v, Group: apiv1.Group, Resource: apiv1.Resource}, v != apiv1.VerbDelete && v != apiv1.VerbAttach})
	}
	qs = append(qs,
		question{"list pods in " + ns, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Resource: "pods"}, true},
		question{"create pods/portforward in " + ns, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods", Subresource: "portforward"}, true},
		question{"get configmaps in " + ns, authorizationv1.ResourceAttributes{Namespace: ns, Verb: "get", Resource: "configmaps", Name: apiv1.AgentCertMapName}, true},
	)
	var allowed, denied, failed []string
	for _, q := range qs {
		attrs := q.attrs
		r, err := o.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
		}, metav1.CreateOptions{})
		switch {
		case err != nil:
			failed = append(failed, q.label+": "+err.Error())
		case r.Status.Allowed:
			allowed = append(allowed, q.label)
		case q.need:
			denied = append(denied, q.label)
		default:
			allowed = append(allowed, q.label+" (no)")
		}
	}
	for _, f := range failed {
		o.report("FAIL", "RBAC check %s", f)
	}
	if len(denied) > 0 {
		o.report("FAIL", "RBAC: you may not %s; ask for the chart's cake-agents-user ClusterRole", strings.Join(denied, "; "))
	}
	if len(failed) == 0 && len(denied) == 0 {
		o.report("ok", "RBAC: %s", strings.Join(allowed, "; "))
	}
}

// checkForgedHeaders sends the user's real credentials plus a forged proxy identity
// header: the agent must refuse (401) identity headers from anyone but its configured
// proxies, or anyone able to reach it could claim to be anyone.
func (o *DoctorOptions) checkForgedHeaders(ctx context.Context, c *client.Client, info *apiv1.HeaderAuthInfo) {
	if o.Factory.serverURL() != "" {
		o.report("skip", "forged identity headers: not probed through --server (the proxy in front sets them)")
		return
	}
	const forged = "forged-by-kubectl-agents-doctor@invalid"
	headers := forgedHeaders(info, forged)
	if len(headers) == 0 {
		o.report("skip", "forged identity headers: the agent reads no identity headers (header auth off, no header names)")
		return
	}
	names := make([]string, 0, len(headers))
	for name := range headers {
		names = append(names, name)
	}
	sort.Strings(names)
	shown := strings.Join(names, ", ")
	req, err := c.NewRequest(ctx, http.MethodGet, "/api/v1/whoami", nil, nil)
	if err != nil {
		o.report("FAIL", "forged identity headers: %v", err)
		return
	}
	for name, vs := range headers {
		req.Header[name] = vs
	}
	var who apiv1.WhoAmI
	err = c.Do(req, &who)
	switch {
	case client.StatusCode(err) == http.StatusUnauthorized:
		o.report("ok", "forged identity headers are refused (%s: 401)", shown)
	case err != nil:
		o.report("FAIL", "forged identity headers: expected 401, got %v", err)
	case who.User.Email == forged || who.Username == forged:
		o.report("FAIL", "forged identity headers are TRUSTED: the agent took %s from a port-forward; anyone who can reach it can be anyone. Restrict headerAuth to the proxy's addresses", shown)
	default:
		o.report("FAIL", "forged identity headers are ignored instead of refused with 401 (the agent answered as %s)", displayUser(who.User.Email, who.Username))
	}
}

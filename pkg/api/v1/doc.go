// Package v1 holds the JSON wire types of the agent's HTTP API (/api/v1), shared by
// the agent, the kubectl plugin, the web UI tests and the end-to-end tests.
//
// It imports only the standard library so the plugin stays small and CGO-free.
package v1

// Group and Resource name the virtual Kubernetes resource that authorizes API calls
// through SubjectAccessReview, so `kubectl auth can-i create sessions.agents.cake.ai`
// answers the same question the agent asks.
const (
	Group    = "agents.cake.ai"
	Resource = "sessions"
)

// Verbs checked with SubjectAccessReview on sessions.agents.cake.ai.
const (
	VerbGet    = "get"
	VerbList   = "list"
	VerbCreate = "create"
	VerbUpdate = "update"
	VerbDelete = "delete"
	VerbAttach = "attach"
)

// Labels and annotations the agent puts on everything it creates for a session, and the
// labels the plugin uses to find the agent.
const (
	LabelName        = "app.kubernetes.io/name"
	LabelInstance    = "app.kubernetes.io/instance"
	LabelComponent   = "app.kubernetes.io/component"
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	LabelSessionID   = "agents.cake.ai/session-id"
	LabelOwnerID     = "agents.cake.ai/owner-id"
	SessionAppName   = "cake-agents-session"
	AgentAppName     = "cake-agents"
	AgentComponent   = "control-plane"
	ManagedByAgent   = "cake-agents"
	AgentCertMapName = "cake-agents-serving-ca" // ConfigMap publishing the agent's serving CA (key ca.crt)
)

// Ports of the agent container and of OpenCode inside a session pod.
const (
	// AgentHTTPSPort serves the API with TLS; the plugin port-forwards here and may
	// present a client certificate.
	AgentHTTPSPort = 8443
	// AgentHTTPPort serves the API and the web UI in plain HTTP for the authenticating
	// proxy / ingress in front of the Service.
	AgentHTTPPort = 8080
	// OpenCodePort is where `opencode serve` listens inside a session pod.
	OpenCodePort = 4096
)

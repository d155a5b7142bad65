// Package audit records who did what to which session, and who was turned away.
//
// Every state-changing call and every denial goes to the store's audit log (queried
// by admins through GET /api/v1/audit) and to the agent's log. Events never carry
// secrets: the detail text is scrubbed of anything that looks like a bearer token,
// a personal access token or a JWT before it is written anywhere, because audit rows
// outlive the credentials' owners and are readable by every admin.
package audit

import (
	"context"
	"regexp"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
)

// Outcomes of an audited decision.
const (
	OutcomeSuccess = "success"
	OutcomeDenied  = "denied"
	OutcomeError   = "error"
)

// Event is one decision to record. Actor is how the caller is shown (email or user
// name, or a description of the unauthenticated peer), Action a stable dotted verb
// such as "session.create" or "auth.authenticate", Target what was acted on.
type Event struct {
	Actor   string
	Action  string
	Target  string
	Outcome string
	Detail  string
}

// Recorder writes audit events to the store and the log. A nil *Recorder records
// nothing, so tests and tools can pass nil.
type Recorder struct {
	st   store.Store
	log  hclog.Logger
	now  func() time.Time
	sink func(Event)
}

// SetSink also hands every recorded event, redacted, to sink (the agent emits them as
// Kubernetes Events, so `kubectl get events` shows who was allowed or refused what). Call it
// before the recorder is used.
func (r *Recorder) SetSink(sink func(Event)) {
	if r != nil {
		r.sink = sink
	}
}

// NewRecorder returns a Recorder writing to st (which may be nil: log only) and log.
func NewRecorder(st store.Store, log hclog.Logger) *Recorder {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Recorder{st: st, log: log, now: time.Now}
}

// Record writes e. A failure to store the event is logged, not returned: an audit
// outage must not turn every request into an error, and the log line still carries
// the event.
func (r *Recorder) Record(ctx context.Context, e Event) {
	if r == nil {
		return
	}
	ev := &store.AuditEvent{
		Time:      r.now().UTC(),
		Actor:     Redact(e.Actor),
		Action:    e.Action,
		Target:    Redact(e.Target),
		Outcome:   e.Outcome,
		Detail:    Redact(e.Detail),
		RequestID: RequestID(ctx),
	}
	if ev.Outcome == "" {
		ev.Outcome = OutcomeSuccess
	}
	kv := []any{"actor", ev.Actor, "action", ev.Action, "target", ev.Target, "outcome", ev.Outcome, "request_id", ev.RequestID}
	if ev.Detail != "" {
		kv = append(kv, "detail", ev.Detail)
	}
	if ev.Outcome == OutcomeSuccess {
		r.log.Info("audit", kv...)
	} else {
		r.log.Warn("audit", kv...)
	}
	if r.sink != nil {
		r.sink(Event{Actor: ev.Actor, Action: ev.Action, Target: ev.Target, Outcome: ev.Outcome, Detail: ev.Detail})
	}
	if r.st == nil {
		return
	}
	// The request may already be cancelled (client gone) while the decision still
	// has to be on record.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.st.AppendAudit(sctx, ev); err != nil {
		r.log.Error("append audit event failed", append(kv, "error", err)...)
	}
}

// Success records a successful action.
func (r *Recorder) Success(ctx context.Context, actor, action, target, detail string) {
	r.Record(ctx, Event{Actor: actor, Action: action, Target: target, Outcome: OutcomeSuccess, Detail: detail})
}

// Denied records a refused action (authentication or authorization).
func (r *Recorder) Denied(ctx context.Context, actor, action, target, detail string) {
	r.Record(ctx, Event{Actor: actor, Action: action, Target: target, Outcome: OutcomeDenied, Detail: detail})
}

// Error records an action that failed for a reason other than a denial.
func (r *Recorder) Error(ctx context.Context, actor, action, target string, err error) {
	detail := ""
	if err != nil {
		detail = err.Error()
	}
	r.Record(ctx, Event{Actor: actor, Action: action, Target: target, Outcome: OutcomeError, Detail: detail})
}

type redaction struct {
	re   *regexp.Regexp
	repl string
}

// redactions are tried in order. Short runs after "Bearer"/"Basic" are left alone so
// ordinary prose ("bearer token rejected") survives; real credentials are longer.
var redactions = []redaction{
	{regexp.MustCompile(`(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{16,}`), "${1}${2}[REDACTED]"},
	{regexp.MustCompile(`cka_[A-Za-z0-9_-]+`), "[REDACTED]"},
	// JWTs: base64url JSON objects start with eyJ.
	{regexp.MustCompile(`eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]*)?`), "[REDACTED]"},
	{regexp.MustCompile(`(?i)\b(password|passwd|secret|token|api[_-]?key|auth_token)=[^\s,&;]+`), "${1}=[REDACTED]"},
	{regexp.MustCompile(`(?i)"(password|passwd|secret|token|api[_-]?key|auth_token)"(\s*:\s*)"[^"]*"`), `"${1}"${2}"[REDACTED]"`},
}

// Redact replaces anything in s that looks like a credential with "[REDACTED]". It is
// a safety net, not a licence to pass secrets: callers still must not put them in
// events or log lines.
func Redact(s string) string {
	for _, r := range redactions {
		if s == "" {
			return s
		}
		s = r.re.ReplaceAllString(s, r.repl)
	}
	return s
}

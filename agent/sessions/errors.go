package sessions

import (
	"context"
	"errors"
	"net"
	"net/url"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilnet "k8s.io/apimachinery/pkg/util/net"

	"github.com/cakeai/cake-agents/agent/litellm"
)

// ErrInvalidState is returned (wrapped) when an operation does not apply to the
// session's current state, e.g. starting a session that is being deleted.
var ErrInvalidState = errors.New("invalid session state")

// ErrBusy is returned (wrapped) when another operation on the session, on this replica
// or another, held its lock for longer than an operation waits (LockWait).
var ErrBusy = errors.New("session busy")

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
	if litellm.IsError(err) {
		// LiteLLM's answer can quote the master key: the detail stays in the log.
		return litellm.Advice(err)
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Message != "" {
		return st.Status().Message
	}
	return err.Error()
}

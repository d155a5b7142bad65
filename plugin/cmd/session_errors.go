package cmd

import (
	"errors"
	"fmt"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// sessionRef is how commands name a session in status lines, like kubectl's "pod/x".
func sessionRef(id string) string { return "session/" + id }

// sessionNotFound is what every command says when the agent does not know the session it
// was given (or does not let the caller see it: the agent answers 404 for both).
func sessionNotFound(id string) error {
	return fmt.Errorf("session %q not found: list sessions with `kubectl agents session list`", id)
}

// sessionError turns the agent's answer about session id into the command's error: 404 is
// sessionNotFound, anything else says what was being done ("get session/ID: ...").
func sessionError(err error, doing, id string) error {
	if client.IsNotFound(err) {
		return sessionNotFound(id)
	}
	return fmt.Errorf("%s %s: %w", doing, sessionRef(id), err)
}

// isNotRunning reports whether the agent refused because the session has no running pod.
func isNotRunning(err error) bool {
	var apiErr *apiv1.Error
	return errors.As(err, &apiErr) && apiErr.Body.Code == apiv1.CodeNotRunning
}

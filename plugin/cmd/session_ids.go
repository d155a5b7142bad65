package cmd

import (
	"fmt"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// checkSessionIDs refuses, before the agent is reached, a name that cannot be a session
// id: the agent's own rule (apiv1.ValidateSessionID), so a typo is reported as such
// rather than as a session the agent does not know.
func checkSessionIDs(ids ...string) error {
	for _, id := range ids {
		if err := apiv1.ValidateSessionID(id); err != nil {
			return fmt.Errorf("%w: list sessions with `kubectl agents session list`", err)
		}
	}
	return nil
}

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/sessions"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// testBusyIsNotIdle runs the agent with a 15-second idle timeout: a session whose real
// OpenCode spends 40 seconds in a tool call, with nobody attached, is not stopped (its
// activity is OpenCode's own, opencode-busy); once the call is done, the idle timer
// stops it.
func (p *product) testBusyIsNotIdle(t *testing.T) {
	ctx := context.Background()
	restart := func(env ...string) {
		p.env.StopAgent(false)
		if err := p.env.StartAgentEnv(ctx, env...); err != nil {
			t.Fatal(err)
		}
	}
	restart("AGENT_SESSION_IDLE_TIMEOUT=15s")
	defer restart()

	id := lastField(p.agents(t, p.alice, "session", "create", "--prompt", "#tool:bash sleep 40 && echo slept", "--wait", "-o", "name"))
	defer func() { _, _ = p.agentsErr(t, p.alice, "session", "delete", id) }()
	get := func(field string) string {
		return strings.TrimSpace(p.agents(t, p.alice, "session", "get", id, "-o", "jsonpath={."+field+"}"))
	}
	// Past two idle timeouts (counted from Running), the tool still running: the check at
	// the second found it working.
	time.Sleep(35 * time.Second)
	if state, src := get("state"), get("lastActivitySource"); state != string(apiv1.StateRunning) || src != sessions.ActivityOpenCodeBusy {
		t.Fatalf("a session busy in a tool call, 35s into a 15s idle timeout: state %s, last activity %q", state, src)
	}
	eventually(t, 2*time.Minute, "the idle timer stops it once the tool is done", func() error {
		if state, reason := get("state"), get("reason"); state != string(apiv1.StateStopped) || reason != sessions.ReasonIdleTimeout {
			return fmt.Errorf("state %s reason %s", state, reason)
		}
		return nil
	})
}

package sessions

import (
	"context"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/cakeai/cake-agents/agent/store"
)

// TestCreateRefusesIDsOutsideTheRule: an id the API would refuse in a path is not stored
// (the controller, through ValidID, and the API share apiv1.ValidateSessionID), and
// nothing is created.
func TestCreateRefusesIDsOutsideTheRule(t *testing.T) {
	kube := fake.NewClientset()
	st, owner := newStore(t)
	c := newTestController(t, testConfig("ns"), kube, st)
	for _, id := range []string{"1abc", "abc-", strings.Repeat("a", 41)} {
		err := c.Create(context.Background(), &store.Session{ID: id, OwnerID: owner}, 0)
		if err == nil || !strings.Contains(err.Error(), "invalid session id") {
			t.Errorf("Create(%q) = %v, want the id refused", id, err)
		}
	}
	if page, err := st.ListSessions(context.Background(), store.SessionFilter{}); err != nil || len(page.Items) != 0 {
		t.Errorf("stored %d sessions (%v)", len(page.Items), err)
	}
	if len(kube.Actions()) != 0 {
		t.Errorf("kubernetes calls for a refused id: %v", kube.Actions())
	}
}

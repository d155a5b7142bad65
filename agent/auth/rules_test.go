package auth

import (
	"testing"

	"github.com/cakeai/cake-agents/agent/store"
)

func TestRules(t *testing.T) {
	owner := &Identity{UserID: "u-owner", Username: "owner"}
	other := &Identity{UserID: "u-other", Username: "other"}
	admin := &Identity{UserID: "u-admin", Username: "admin", Admin: true}
	noID := &Identity{Username: "unstored"} // never matches an owner, even an empty one
	private := &store.Session{ID: "s1", OwnerID: "u-owner", Private: true}
	public := &store.Session{ID: "s2", OwnerID: "u-owner", Private: false}
	orphan := &store.Session{ID: "s3", OwnerID: "", Private: true}

	type verdicts struct{ view, attach, modify, stop, del, password bool }
	cases := []struct {
		name string
		id   *Identity
		s    *store.Session
		want verdicts
	}{
		{"owner, private", owner, private, verdicts{true, true, true, true, true, true}},
		{"owner, public", owner, public, verdicts{true, true, true, true, true, true}},
		{"other user, private", other, private, verdicts{}},
		{"other user, public: view and attach only", other, public, verdicts{view: true, attach: true}},
		{"admin, private: everything but the password", admin, private, verdicts{true, true, true, true, true, false}},
		{"admin, public: everything but the password", admin, public, verdicts{true, true, true, true, true, false}},
		{"identity without user id, private session with empty owner", noID, orphan, verdicts{}},
		{"nil identity, public", nil, public, verdicts{}},
		{"nil session", owner, nil, verdicts{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := verdicts{
				view:     CanView(tc.id, tc.s),
				attach:   CanAttach(tc.id, tc.s),
				modify:   CanModify(tc.id, tc.s),
				stop:     CanStop(tc.id, tc.s),
				del:      CanDelete(tc.id, tc.s),
				password: CanSeePassword(tc.id, tc.s),
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

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

	type verdicts struct{ view, drive, modify, stop, del, password bool }
	cases := []struct {
		name    string
		id      *Identity
		s       *store.Session
		granted bool // RBAC grants "attach" on the session
		want    verdicts
	}{
		{"owner, private", owner, private, false, verdicts{true, true, true, true, true, true}},
		{"owner, public", owner, public, false, verdicts{true, true, true, true, true, true}},
		{"other user, private", other, private, false, verdicts{}},
		{"other user, private, attach granted: still invisible", other, private, true, verdicts{}},
		{"other user, public: view only", other, public, false, verdicts{view: true}},
		{"other user, public, attach granted: view and drive", other, public, true, verdicts{view: true, drive: true}},
		{"admin, private: everything but the password", admin, private, false, verdicts{true, true, true, true, true, false}},
		{"admin, public: everything but the password", admin, public, false, verdicts{true, true, true, true, true, false}},
		{"identity without user id, private session with empty owner", noID, orphan, true, verdicts{}},
		{"nil identity, public", nil, public, true, verdicts{}},
		{"nil session", owner, nil, true, verdicts{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := verdicts{
				view:     CanView(tc.id, tc.s),
				drive:    CanDrive(tc.id, tc.s, tc.granted),
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

package auth

import "github.com/cakeai/cake-agents/agent/store"

// The rules below decide what an authenticated caller may do to one session once
// SubjectAccessReview has allowed the verb at all. They are pure functions of the
// identity and the session (and, for CanDrive, of the SAR answer about that session) so
// every rule is table-tested; the server calls them after its SAR checks.

// IsOwner reports whether id owns s.
func IsOwner(id *Identity, s *store.Session) bool {
	return id != nil && s != nil && id.UserID != "" && id.UserID == s.OwnerID
}

// CanView reports whether id may see s: its owner, an admin, or anyone when the
// session is not private.
func CanView(id *Identity, s *store.Session) bool {
	if id == nil || s == nil {
		return false
	}
	return IsOwner(id, s) || id.Admin || !s.Private
}

// CanDrive reports whether id may act inside s — send it prompts, attach to its OpenCode
// through the agent, reach its port — given whether RBAC grants id the verb "attach" on s
// (a rule on sessions.agents.cake.ai, optionally limited to s with resourceNames). Reading a
// visible session (list, get, logs) is for every user; driving it is for its owner, admins,
// and users granted attach. The OpenCode a session runs executes what it is told with the
// owner's repository and credentials, so seeing a public session must not mean steering it.
func CanDrive(id *Identity, s *store.Session, attachGranted bool) bool {
	if !CanView(id, s) {
		return false
	}
	return IsOwner(id, s) || id.Admin || attachGranted
}

// CanModify reports whether id may change s (title, privacy, messages, restart): only
// its owner or an admin. Non-private sessions are visible to all, not writable by all.
func CanModify(id *Identity, s *store.Session) bool {
	if id == nil || s == nil {
		return false
	}
	return IsOwner(id, s) || id.Admin
}

// CanStop reports whether id may stop s: owner or admin.
func CanStop(id *Identity, s *store.Session) bool { return CanModify(id, s) }

// CanDelete reports whether id may delete s: owner or admin.
func CanDelete(id *Identity, s *store.Session) bool { return CanModify(id, s) }

// CanSeePassword reports whether id may learn s's OpenCode password: the owner only.
// Admins can stop or delete any session but never act as its owner inside OpenCode;
// attaching to another user's session goes through the agent's proxy, which adds the
// password itself.
func CanSeePassword(id *Identity, s *store.Session) bool {
	return IsOwner(id, s)
}

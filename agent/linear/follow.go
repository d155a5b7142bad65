package linear

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Follow adds session id to those whose replies and end are commented on their issue.
// The agent calls it when a session turns Running (so a session started again is
// followed again); a session without a Linear link is dropped at its first look. It
// does not block: the follower in Run does the work, from what the store says, so a
// restart or another replica picks it up where it was.
func (s *Service) Follow(id string) { s.follower.Add(id) }

// Followed returns the ids of the sessions being followed (for tests and metrics).
func (s *Service) Followed() []string { return s.follower.IDs() }

// FollowOnce looks at every followed session once (Run does it every PollInterval).
func (s *Service) FollowOnce(ctx context.Context) { s.follower.Once(ctx) }

// maxAnswer bounds the copy of the last answer kept on the link for the summary.
const maxAnswer = 8000

// step brings a session's issue up to date: its newest answer is commented once the
// conversation is idle, and its end once it reaches Stopped or Failed. It reports
// whether there is nothing left to follow (the session ended and that was commented,
// it went away, or it belongs to no issue).
//
// Every replica may follow a session (and a restarted agent follows its predecessor's),
// so each comment is claimed first by swapping the link's data (compare-and-swap):
// only the one whose swap wins comments, and when commenting then fails it swaps the
// claim back, for the next look to try again.
func (s *Service) step(ctx context.Context, id string) bool {
	log := s.log.With("session", id)
	links, err := s.o.Store.ListLinks(ctx, id)
	if err != nil {
		log.Warn("list session links failed", "error", err)
		return false
	}
	var link *store.IntegrationLink
	for _, l := range links {
		if l.Source == Source {
			link = l
		}
	}
	if link == nil {
		return true // not an issue's session, or deleted with its links
	}
	sess, err := s.o.Store.GetSession(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return true
	}
	if err != nil {
		log.Warn("read followed session failed", "error", err)
		return false
	}
	var d linkData
	if err := json.Unmarshal(link.Data, &d); err != nil {
		log.Warn("unreadable linear link data; the session is no longer followed", "issue", link.ExternalID, "error", err)
		return true
	}
	next := d
	var body string
	switch sess.State {
	case apiv1.StateRunning:
		// Running (again, after an end was commented): its next end is commented too.
		next.Ended = false
		if answer := s.answer(ctx, log, sess); answer != nil && answer.ID != d.LastPosted {
			next.LastPosted, next.LastAnswer = answer.ID, answer.Text
			if len(answer.Text) > maxAnswer {
				next.LastAnswer = truncate(answer.Text, maxAnswer) + fmt.Sprintf("\n… (the rest: `kubectl agents session logs %s`)", sess.ID)
			}
			body = fmt.Sprintf("Session `%s` answered:\n\n%s\n\n(Web UI: %s)", sess.ID, answer.Text, s.sessionURL(sess.ID))
		}
	case apiv1.StateStopped, apiv1.StateFailed:
		if d.Ended {
			return true
		}
		next.Ended = true
		body = s.summary(sess, d)
	default:
		return false // on its way: Pending, Starting, Stopping, Deleting
	}
	if next == d {
		return false
	}
	claimed, _ := json.Marshal(next)
	if err := s.o.Store.UpdateLinkData(ctx, Source, link.ExternalID, link.Data, claimed); err != nil {
		// ErrConflict: another follower claimed it first (it comments), or the data moved
		// on; the next look sees which.
		if !errors.Is(err, store.ErrConflict) {
			log.Warn("claim the linear comment failed", "error", err)
		}
		return false
	}
	if body == "" {
		return false // only the ended flag was cleared
	}
	if err := s.comment(ctx, link.ExternalID, body); err != nil {
		log.Warn("comment on the linear issue failed; it is tried again", "issue", d.Identifier, "error", err)
		if err := s.o.Store.UpdateLinkData(ctx, Source, link.ExternalID, claimed, link.Data); err != nil {
			log.Warn("give back the linear comment's claim failed", "error", err)
		}
		return false
	}
	return next.Ended
}

// answer is the session's newest assistant message once its conversation is idle
// (nil while it works, before its first answer, or when OpenCode cannot be asked).
func (s *Service) answer(ctx context.Context, log hclog.Logger, sess *store.Session) *apiv1.Message {
	if sess.OpenCodeSessionID == "" {
		return nil
	}
	busy, err := s.o.Conversation.Busy(ctx, sess)
	if err != nil {
		log.Debug("ask whether the session is busy failed", "error", err)
		return nil
	}
	if busy {
		return nil
	}
	msgs, err := s.o.Conversation.Messages(ctx, sess)
	if err != nil {
		log.Debug("read the session's messages failed", "error", err)
		return nil
	}
	if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" && strings.TrimSpace(msgs[n-1].Text) != "" {
		return &msgs[n-1]
	}
	return nil
}

// summary is the comment on a session's end: its last answer, or that it ended before
// answering, with its state and why.
func (s *Service) summary(sess *store.Session, d linkData) string {
	var b strings.Builder
	if d.LastAnswer == "" {
		fmt.Fprintf(&b, "Session `%s` ended (%s) before it answered.", sess.ID, sess.State)
	} else {
		fmt.Fprintf(&b, "Session `%s` ended (%s).", sess.ID, sess.State)
	}
	if m := strings.TrimSpace(sess.Message); m != "" {
		fmt.Fprintf(&b, " %s", m)
	}
	if d.LastAnswer != "" {
		fmt.Fprintf(&b, " Its last answer:\n\n%s", d.LastAnswer)
	}
	fmt.Fprintf(&b, "\n\nStart it again with `kubectl agents session start %s` (Web UI: %s).", sess.ID, s.sessionURL(sess.ID))
	return b.String()
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

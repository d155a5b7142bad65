package slack

import (
	"context"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Followed returns the ids of the sessions being followed (for tests and metrics).
func (h *Handler) Followed() []string { return h.follower.IDs() }

// resume follows the active sessions started from Slack (after a restart, and those
// another replica started).
func (h *Handler) resume(ctx context.Context) { h.follower.Resume(ctx) }

// FollowOnce looks at every followed session once (Run does it every PollInterval).
func (h *Handler) FollowOnce(ctx context.Context) { h.follower.Once(ctx) }

// maxText keeps a posted answer within what Slack shows in one message.
const maxText = 3900

// step brings a session's thread up to date: the status message shows its state, and
// its newest answer is posted once the conversation is idle. It reports whether there
// is nothing left to follow (the session stopped or went away).
func (h *Handler) step(ctx context.Context, id string) bool {
	log := h.log.With("session", id)
	links, err := h.o.Store.ListLinks(ctx, id)
	if err != nil {
		log.Warn("list session links failed", "error", err)
		return false
	}
	sess, err := h.o.Store.GetSession(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		log.Warn("read followed session failed", "error", err)
		return false
	}
	// Deleted: the links went with it (nothing to update either).
	if sess == nil {
		return true
	}
	// The answer is read once for all the session's threads.
	var answer *apiv1.Message
	if sess.State == apiv1.StateRunning && sess.OpenCodeSessionID != "" {
		busy, err := h.o.Conversation.Busy(ctx, sess)
		if err != nil {
			log.Debug("ask whether the session is busy failed", "error", err)
		} else if !busy {
			msgs, err := h.o.Conversation.Messages(ctx, sess)
			if err != nil {
				log.Debug("read the session's messages failed", "error", err)
			} else if n := len(msgs); n > 0 && msgs[n-1].Role == "assistant" && msgs[n-1].Text != "" {
				answer = &msgs[n-1]
			}
		}
	}
	for _, l := range links {
		if l.Source != Source {
			continue
		}
		var d linkData
		if err := json.Unmarshal(l.Data, &d); err != nil || d.Channel == "" {
			log.Warn("unreadable slack link data", "thread", l.ExternalID)
			continue
		}
		// Claim the work with a compare-and-swap before doing it: every replica follows
		// every Slack session (and a restart its predecessor's), and only the one whose
		// swap wins posts; if posting then fails, the claim is given back for the next
		// look.
		next := d
		statusDue := string(sess.State) != d.State && d.StatusTS != ""
		if statusDue {
			next.State = string(sess.State)
		}
		answerDue := answer != nil && answer.ID != d.Answered
		if answerDue {
			next.Answered = answer.ID
		}
		if !statusDue && !answerDue {
			continue
		}
		claimed, _ := json.Marshal(next)
		if err := h.o.Store.UpdateLinkData(ctx, Source, l.ExternalID, l.Data, claimed); err != nil {
			if !errors.Is(err, store.ErrConflict) {
				log.Warn("record slack thread progress failed", "error", err)
			}
			continue
		}
		failed := false
		if statusDue {
			if err := h.o.Client.UpdateMessage(ctx, d.Channel, d.StatusTS, h.statusText(sess)); err != nil {
				log.Warn("slack status update failed", "error", err)
				failed = true
			}
		}
		if answerDue {
			text := answer.Text
			if len(text) > maxText {
				text = truncate(text, maxText) + "\n… (the rest: `kubectl agents session logs " + id + "`)"
			}
			if _, err := h.o.Client.PostMessage(ctx, d.Channel, d.ThreadTS, text); err != nil {
				log.Warn("slack answer post failed", "error", err)
				failed = true
			}
		}
		if failed {
			if err := h.o.Store.UpdateLinkData(ctx, Source, l.ExternalID, claimed, l.Data); err != nil {
				log.Warn("give back the slack thread's claim failed", "error", err)
			}
			// Not done while the thread misses its last status or answer.
			return false
		}
	}
	switch sess.State {
	case apiv1.StateStopped, apiv1.StateFailed:
		return true
	}
	return false
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

package sessions

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cakeai/cake-agents/agent/litellm"
	"github.com/cakeai/cake-agents/agent/store"
)

// ErrModelKey is wrapped by a Create that failed because the session's own LiteLLM key
// could not be made; it also wraps litellm.ErrUnavailable when LiteLLM was down.
var ErrModelKey = errors.New("the session's LiteLLM key could not be made")

// Each session gets its own LiteLLM virtual key: the master key only ever calls the
// key API from the agent, and a session's key can spend only its own budget and is
// deleted when the session stops or goes. A key's row (store.ModelKey) is written
// before the key is generated and kept past the session's row, so whatever a crash
// interrupts, the reconciler finds the key and deletes it (see revokeKeys, sweep).

// litellmModelPrefix is the provider id sessioninit gives the LiteLLM provider.
const litellmModelPrefix = "litellm/"

// keyModels are the models s's key may call: the session's model (the configured
// default when it names none) when it is one of LiteLLM's, as OpenCode asks LiteLLM for
// it (without the provider prefix). ok is false when the session's model is another
// provider's, or none at all: then the session gets no key, since a key for "every
// model" would let it spend on any model LiteLLM serves.
func (c *Controller) keyModels(s *store.Session) (models []string, ok bool) {
	model := s.Model
	if model == "" {
		model = c.cfg.DefaultModel
	}
	name, gateway := strings.CutPrefix(model, litellmModelPrefix)
	if name == "" || (!gateway && strings.Contains(name, "/")) {
		return nil, false
	}
	return []string{name}, true
}

// keyDuration is how long s's new key lives: the time left of the session's TTL (the
// session is deleted then; the key must not outlive it), or the configured duration
// when that is shorter.
func (c *Controller) keyDuration(s *store.Session) time.Duration {
	d := c.cfg.LiteLLMKeyDuration
	if exp, ok := s.ExpiresAt(); ok {
		// A session about to expire still gets a usable key; it goes with the session.
		left := max(exp.Sub(c.now()), time.Minute)
		if d <= 0 || left < d {
			d = left
		}
	}
	return d
}

// keyAlias names a new key of session id: unique (LiteLLM requires unique aliases, and
// a session gets a new key at every start) and telling whose it is.
func (c *Controller) keyAlias(id string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("cake-agents-%s-%s-%s", c.cfg.Release, id, hex.EncodeToString(b))
}

// issueKey makes a new LiteLLM key for s and returns it ("" when s's model is not
// LiteLLM's: it needs none). On failure nothing is left in LiteLLM, or the key's live
// row makes the reconciler delete it.
func (c *Controller) issueKey(ctx context.Context, s *store.Session) (string, error) {
	models, ok := c.keyModels(s)
	if !ok {
		return "", nil
	}
	rec := &store.ModelKey{Alias: c.keyAlias(s.ID), SessionID: s.ID, OwnerID: s.OwnerID, CreatedAt: c.now().UTC()}
	if err := c.st.PutModelKey(ctx, rec); err != nil {
		return "", fmt.Errorf("record the LiteLLM key of session %s: %w", s.ID, err)
	}
	if c.cfg.LiteLLMUserBudget > 0 {
		if err := c.cfg.LiteLLM.SetUserBudget(ctx, s.OwnerID, c.cfg.LiteLLMUserBudget, c.cfg.LiteLLMUserBudgetPeriod); err != nil {
			c.dropKey(ctx, rec)
			return "", fmt.Errorf("%w: %w", ErrModelKey, err)
		}
	}
	k, err := c.cfg.LiteLLM.GenerateKey(ctx, litellm.KeyRequest{
		Alias:     rec.Alias,
		Models:    models,
		MaxBudget: c.cfg.LiteLLMSessionBudget,
		Duration:  c.keyDuration(s),
		UserID:    s.OwnerID,
		Metadata: map[string]string{
			"cake_agents_session":   s.ID,
			"cake_agents_owner":     s.OwnerID,
			"cake_agents_release":   c.cfg.Release,
			"cake_agents_namespace": c.cfg.Namespace,
		},
	})
	if err != nil {
		// LiteLLM may have made the key and failed to answer: delete it by alias.
		c.dropKey(ctx, rec)
		return "", fmt.Errorf("%w: %w", ErrModelKey, err)
	}
	rec.Token = k.Token
	if err := c.st.PutModelKey(ctx, rec); err != nil {
		// Only its spend is lost to the session's total; the alias deletes it.
		c.log.Warn("record the LiteLLM key hash failed", "session", s.ID, "error", err)
	}
	c.log.Info("made the session's LiteLLM key", "session", s.ID, "alias", rec.Alias)
	return k.Key, nil
}

// dropKey deletes a key whose generation failed or was not answered; when LiteLLM
// cannot be asked, the row stays live and the reconciler retries.
func (c *Controller) dropKey(ctx context.Context, rec *store.ModelKey) {
	if err := c.cfg.LiteLLM.DeleteKeysByAlias(ctx, rec.Alias); err != nil {
		c.log.Warn("delete a half-made LiteLLM key failed; the reconciler will retry", "session", rec.SessionID, "alias", rec.Alias, "error", err)
		return
	}
	now := c.now().UTC()
	rec.DeletedAt = &now
	if err := c.st.PutModelKey(ctx, rec); err != nil {
		c.log.Warn("record a deleted LiteLLM key failed", "session", rec.SessionID, "alias", rec.Alias, "error", err)
	}
}

// revokeKeys deletes every live LiteLLM key of session id, keeping each one's final
// spend on its row. It is a no-op without LiteLLM or without live keys.
func (c *Controller) revokeKeys(ctx context.Context, id string) error {
	if c.cfg.LiteLLM == nil {
		return nil
	}
	live, err := c.st.ListModelKeys(ctx, store.ModelKeyFilter{SessionID: id, Live: true})
	if err != nil {
		return fmt.Errorf("list the LiteLLM keys of session %s: %w", id, err)
	}
	for _, k := range live {
		if k.Token != "" {
			if info, err := c.cfg.LiteLLM.KeyInfo(ctx, k.Token); err == nil {
				k.Spend = info.Spend
			} else if !errors.Is(err, litellm.ErrNotFound) {
				c.log.Warn("read the spend of a LiteLLM key failed", "session", id, "alias", k.Alias, "error", err)
			}
		}
		if err := c.cfg.LiteLLM.DeleteKeysByAlias(ctx, k.Alias); err != nil {
			return fmt.Errorf("delete the LiteLLM key of session %s: %w", id, err)
		}
		now := c.now().UTC()
		k.DeletedAt = &now
		if err := c.st.PutModelKey(ctx, k); err != nil {
			return fmt.Errorf("record the deleted LiteLLM key of session %s: %w", id, err)
		}
		c.log.Info("deleted the session's LiteLLM key", "session", id, "alias", k.Alias, "spend", k.Spend)
	}
	return nil
}

// forgetKeys deletes the keys of a session whose row is gone, then their rows.
func (c *Controller) forgetKeys(ctx context.Context, id string) error {
	if c.cfg.LiteLLM == nil {
		return nil
	}
	if err := c.revokeKeys(ctx, id); err != nil {
		return err
	}
	if _, err := c.st.DeleteModelKeys(ctx, id); err != nil {
		return fmt.Errorf("forget the LiteLLM keys of session %s: %w", id, err)
	}
	return nil
}

// holdsLiveKey reports whether key (from session id's Secret) is a LiteLLM key of the
// session not yet deleted: a live row whose token is the key's hash. A row without a
// token (its write failed) matches nothing, so the session gets a new key.
func (c *Controller) holdsLiveKey(ctx context.Context, id string, key []byte) (bool, error) {
	if len(key) == 0 {
		return false, nil
	}
	live, err := c.st.ListModelKeys(ctx, store.ModelKeyFilter{SessionID: id, Live: true})
	if err != nil {
		return false, fmt.Errorf("list the LiteLLM keys of session %s: %w", id, err)
	}
	hash := litellm.HashKey(string(key))
	for _, k := range live {
		if k.Token == hash {
			return true, nil
		}
	}
	return false, nil
}

// Spend returns what session id's LiteLLM keys spent, in USD: the final spend of its
// deleted keys and the current spend of its live one. ok is false when the agent gives
// sessions no LiteLLM keys.
func (c *Controller) Spend(ctx context.Context, id string) (spend float64, ok bool, err error) {
	if c.cfg.LiteLLM == nil {
		return 0, false, nil
	}
	keys, err := c.st.ListModelKeys(ctx, store.ModelKeyFilter{SessionID: id})
	if err != nil {
		return 0, true, fmt.Errorf("list the LiteLLM keys of session %s: %w", id, err)
	}
	for _, k := range keys {
		if k.DeletedAt != nil || k.Token == "" {
			spend += k.Spend
			continue
		}
		info, err := c.cfg.LiteLLM.KeyInfo(ctx, k.Token)
		if err != nil {
			return 0, true, err
		}
		spend += info.Spend
	}
	return spend, true, nil
}

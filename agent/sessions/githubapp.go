package sessions

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/agent/gitcred"
	"github.com/cakeai/cake-agents/agent/github"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// AppTokens issues GitHub App installation tokens for one repository; *github.App is one.
type AppTokens interface {
	Token(ctx context.Context, owner, repo string) (*github.InstallationToken, error)
}

// SecretKeyGitTokenExpiry holds, in RFC 3339, when the GitHub App token in a session's
// Secret expires; only App tokens have it. It is not mounted: the controller reads it to
// replace the token before then.
const SecretKeyGitTokenExpiry = "git-token-expires-at"

// DefaultAppTokenRefresh is how long before its expiry an App token is replaced: enough
// for a slow GitHub and a kubelet that takes a minute or two to update Secret volumes.
const DefaultAppTokenRefresh = 10 * time.Minute

// appRepo returns the owner and name of a session's repository when the GitHub App
// serves it: an https:// repository on the App's host with an owner/name path.
func (c *Controller) appRepo(s *store.Session) (owner, name string, ok bool) {
	if c.cfg.GitHubApp == nil {
		return "", "", false
	}
	return github.Repository(s.Repo, c.cfg.GitHubHost)
}

// appTokenExpiry reads when the App token in a Secret's data expires; ok is false when
// the Secret holds no App token.
func appTokenExpiry(data map[string][]byte) (time.Time, bool) {
	v, has := data[SecretKeyGitTokenExpiry]
	if !has || len(data[SecretKeyGitCredentials]) == 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339, string(v))
	if err != nil {
		// Unreadable: treat it as expired, so it is replaced.
		return time.Time{}, true
	}
	return t, true
}

// appTokenDue reports when the App token in data should be replaced (ok false: there is
// none) and whether that time has come.
func (c *Controller) appTokenDue(data map[string][]byte) (at time.Time, due, ok bool) {
	exp, ok := appTokenExpiry(data)
	if !ok {
		return time.Time{}, false, false
	}
	at = exp.Add(-c.cfg.AppTokenRefresh)
	return at, !c.now().Before(at), true
}

// appSecretData is the git part of s's Secret from the GitHub App: the token cur (the
// Secret's current data) holds while it is not due, else a new one limited to the
// session's repository. No data when the App does not serve the repository or is not
// installed for it: such a session goes without, like one whose owner linked nothing.
func (c *Controller) appSecretData(ctx context.Context, s *store.Session, cur map[string][]byte) (map[string][]byte, error) {
	owner, name, ok := c.appRepo(s)
	if !ok {
		return nil, nil
	}
	if _, due, has := c.appTokenDue(cur); has && !due {
		out := map[string][]byte{}
		for _, k := range gitSecretKeys {
			if v, ok := cur[k]; ok {
				out[k] = v
			}
		}
		return out, nil
	}
	tok, err := c.cfg.GitHubApp.Token(ctx, owner, name)
	if errors.Is(err, github.ErrNotInstalled) {
		c.log.Info("the GitHub App is not installed for the session's repository; it gets no token", "session", s.ID, "repo", owner+"/"+name)
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get a GitHub App token for %s/%s: %w", owner, name, err)
	}
	sec := gitcred.Secret{Kind: apiv1.CredentialKindToken, Username: apiv1.DefaultCredentialUsername, Token: tok.Token}
	host := c.cfg.GitHubHost
	data := map[string][]byte{
		SecretKeyGitCredentials: gitcred.StoreFile(map[string]gitcred.Secret{host: sec}),
		SecretKeyGitTokenExpiry: []byte(tok.ExpiresAt.UTC().Format(time.RFC3339)),
	}
	if host == c.githubHost() {
		data[SecretKeyGHHosts] = gitcred.GHHostsFile(host, sec)
	}
	return data, nil
}

// refreshAppToken replaces the App token of an active session's Secret when it is due,
// and otherwise reconciles the session again when it will be. The informer's copy
// answers the common case (no App token, or not due) without an API call.
func (c *Controller) refreshAppToken(ctx context.Context, s *store.Session) error {
	if c.cfg.GitHubApp == nil {
		return nil
	}
	cached, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(s.ID))
	if apierrors.IsNotFound(err) {
		return nil // no Secret yet: the launch writes one with a fresh token
	}
	if err != nil {
		return fmt.Errorf("read secret %s: %w", SecretName(s.ID), err)
	}
	at, due, ok := c.appTokenDue(cached.Data)
	if !ok {
		return nil
	}
	if !due {
		c.enqueueAfter(s.ID, at.Sub(c.now()))
		return nil
	}
	secrets := c.kube.CoreV1().Secrets(c.cfg.Namespace)
	cur, err := secrets.Get(ctx, SecretName(s.ID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read secret %s: %w", SecretName(s.ID), err)
	}
	want, err := c.gitSecretData(ctx, s, cur.Data)
	if err != nil {
		return err
	}
	if gitDataCurrent(cur.Data, want) {
		return nil
	}
	upd := cur.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string][]byte{}
	}
	setGitData(upd.Data, want)
	if _, err := secrets.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("replace the GitHub App token in secret %s: %w", SecretName(s.ID), err)
	}
	c.log.Info("replaced the session's GitHub App token before it expires", "session", s.ID)
	return nil
}

// appTokenDueCached reports, from the informer's copy, whether the Secret of session id
// holds an App token that should be replaced now: the sweep's cheap check, which also
// catches tokens whose timer died with a previous leader.
func (c *Controller) appTokenDueCached(id string) bool {
	if c.cfg.GitHubApp == nil {
		return false
	}
	cur, err := c.secretLister.Secrets(c.cfg.Namespace).Get(SecretName(id))
	if err != nil {
		return false
	}
	_, due, ok := c.appTokenDue(cur.Data)
	return ok && due
}

package v1

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// The rules below are checked by every party with the same function: the plugin before
// it sends a request, the API before it stores one, the web UI before it renders a page
// and a session's init container before it runs git. A rule written twice drifts, and
// then the API accepts what the pod refuses and the session fails after it was created.

// MaxSessionIDLen is the longest session id. The longest object name derived from an id,
// a persistent session's claim cake-session-<id>-workspace, is then 63 characters: the
// limit of a DNS label and of a label value, which carries the id too.
const MaxSessionIDLen = 40

// ValidateSessionID returns an error naming the rule unless id is a session id: 1 to
// MaxSessionIDLen lowercase letters, digits and '-', starting with a letter and not
// ending with '-', so every object name derived from it is a valid DNS label. The agent's
// generated ids (8 characters starting with a letter) satisfy it.
func ValidateSessionID(id string) error {
	if validSessionID(id) {
		return nil
	}
	return fmt.Errorf("session id %q is not valid: ids are 1 to %d lowercase letters, digits and '-', starting with a letter and not ending with '-'", truncate(id, 2*MaxSessionIDLen), MaxSessionIDLen)
}

// truncate shortens s to n bytes and "...": these values come from request paths, and an
// error echoes only enough of one to recognise it.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func validSessionID(id string) bool {
	if len(id) == 0 || len(id) > MaxSessionIDLen || id[len(id)-1] == '-' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z':
		case (c >= '0' && c <= '9' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// MaxRepoURLLen is the longest repository URL the agent accepts.
const MaxRepoURLLen = 2048

// scpRepo matches git's scp-like address user@host:path, as in git@github.com:org/repo.git.
var scpRepo = regexp.MustCompile(`^([A-Za-z0-9._-]+)@([A-Za-z0-9.-]+):([A-Za-z0-9._~/-]+)$`)

// repoHint is how every repository error ends: the forms that are accepted.
const repoHint = "use an https:// or ssh:// URL (https://host/org/repo.git) or git@host:org/repo.git"

// ValidateRepoURL returns an error naming the problem and the fix unless repo is a
// repository a session may clone: an https:// or ssh:// URL with a host and a path, or
// git's scp-like user@host:path with a path under the login's home. It refuses
//   - anything starting with '-', and ssh hosts, users and paths starting with '-': git
//     and ssh would read them as options (--upload-pack=..., -oProxyCommand=...);
//   - other schemes: ext:: and fd:: run commands, http:// and git:// let anyone on the
//     path change the code the session then runs with the user's credentials, file://
//     and local paths read the disk of whoever clones;
//   - credentials in the URL (a password, or an https user name, which is where access
//     tokens go): URLs are stored and shown to everyone who can see the session;
//   - an scp-like address with an absolute path (git@host:/srv/repo): that is written
//     ssh://git@host/srv/repo.
//
// The errors do not name the field; callers prefix it ("repo: ", "--repo ").
func ValidateRepoURL(repo string) error {
	switch {
	case repo == "":
		return errors.New("the repository URL is empty: " + repoHint)
	case len(repo) > MaxRepoURLLen:
		return fmt.Errorf("the URL is longer than %d characters", MaxRepoURLLen)
	case strings.HasPrefix(repo, "-"):
		return fmt.Errorf("%q must not start with '-', which git would read as an option: %s", repo, repoHint)
	}
	if m := scpRepo.FindStringSubmatch(repo); m != nil {
		user, host, path := m[1], m[2], m[3]
		switch {
		case strings.HasPrefix(host, "-"):
			return fmt.Errorf("%q: the host must not start with '-', which ssh would read as an option: %s", repo, repoHint)
		case strings.HasPrefix(path, "/"):
			return fmt.Errorf("%q has an absolute path after the colon: write %s@%s:%s for a path under the login's home, or ssh://%s@%s%s for the absolute path",
				repo, user, host, strings.TrimLeft(path, "/"), user, host, path)
		case strings.HasPrefix(path, "-"):
			return fmt.Errorf("%q: the path must not start with '-', which git would read as an option: %s", repo, repoHint)
		}
		return nil
	}
	u, err := url.Parse(repo)
	if err != nil || u.Scheme == "" {
		return fmt.Errorf("%q is not a repository URL: %s", repo, repoHint)
	}
	switch u.Scheme {
	case "https", "ssh":
	default:
		return fmt.Errorf("scheme %q is not allowed: %s", u.Scheme, repoHint)
	}
	if u.User != nil {
		// These errors do not quote the URL: it holds a secret.
		if _, hasPassword := u.User.Password(); hasPassword {
			return errors.New("the URL contains a password: remove it and link the credential instead; URLs are stored and shown")
		}
		// Only ssh:// has a meaningful plain user name (git@).
		if u.Scheme == "https" {
			return errors.New("the https URL contains a user name, which is often an access token: remove it and link the credential instead; URLs are stored and shown")
		}
		if strings.HasPrefix(u.User.Username(), "-") {
			return fmt.Errorf("%q: the user name must not start with '-', which ssh would read as an option: %s", repo, repoHint)
		}
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host: %s", repo, repoHint)
	}
	if strings.HasPrefix(u.Hostname(), "-") {
		return fmt.Errorf("%q: the host must not start with '-', which ssh would read as an option: %s", repo, repoHint)
	}
	if strings.Trim(u.Path, "/") == "" {
		return fmt.Errorf("%q has no repository path: add it, as in https://%s/org/repo.git", repo, u.Host)
	}
	return nil
}

// MaxCredentialHostLen bounds a credential's host (a DNS name plus an optional port).
const MaxCredentialHostLen = 260

// ValidateCredentialHost returns an error naming the rule unless host is what a git
// credential is keyed by: a host name or IP address, with an optional :port, exactly as it
// appears in https://HOST/org/repo.git (git's credential helpers match on it).
func ValidateCredentialHost(host string) error {
	bad := func() error {
		return fmt.Errorf("host %q is not valid: give the host of the repository URL, as in github.com or git.example.com:8443 (no scheme, user or path)", host)
	}
	if host == "" || len(host) > MaxCredentialHostLen || strings.HasPrefix(host, "-") || strings.HasPrefix(host, ".") {
		return bad()
	}
	name, port, hasPort := strings.Cut(host, ":")
	if name == "" || (hasPort && (port == "" || len(port) > 5)) {
		return bad()
	}
	for _, c := range port {
		if c < '0' || c > '9' {
			return bad()
		}
	}
	for _, c := range name {
		if ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-'; !ok {
			return bad()
		}
	}
	return nil
}

// RepoCredentialHost is the host whose HTTPS token a session on repo uses: the host (with
// its port) of an https:// URL, lowercased; "" for ssh and scp-like addresses, which no
// token serves.
func RepoCredentialHost(repo string) string {
	u, err := url.Parse(repo)
	if err != nil || u.Scheme != "https" {
		return ""
	}
	return strings.ToLower(u.Host)
}

// RepoSSHHost is the host whose SSH key a session on repo uses: the host of an ssh://
// URL (with its port unless 22) or of an scp-like user@host:path address, lowercased;
// "" for https:// URLs, which an SSH key does not serve.
func RepoSSHHost(repo string) string {
	if m := scpRepo.FindStringSubmatch(repo); m != nil {
		return strings.ToLower(m[2])
	}
	u, err := url.Parse(repo)
	if err != nil || u.Scheme != "ssh" {
		return ""
	}
	if u.Port() == "22" {
		return strings.ToLower(u.Hostname())
	}
	return strings.ToLower(u.Host)
}

// slackChannelID matches Slack's channel ids: public C…, private G…, direct messages D….
var slackChannelID = regexp.MustCompile(`^[CGD][A-Z0-9]{2,30}$`)

// ValidateSlackChannelID returns an error naming the rule unless id is a Slack channel id
// (C0123ABCD), which people confuse with the channel's name.
func ValidateSlackChannelID(id string) error {
	if slackChannelID.MatchString(id) {
		return nil
	}
	return fmt.Errorf("%q is not a Slack channel id: want Slack's id such as C0123ABCD (in Slack: the channel's details, at the bottom), not its name", truncate(id, 40))
}

// linearTeamKey matches a Linear team key: letters and digits, as Linear allows them.
var linearTeamKey = regexp.MustCompile(`^[A-Za-z0-9]{1,10}$`)

// ValidateLinearTeamKey returns an error naming the rule unless key is a Linear team key,
// the prefix of the team's issue identifiers (ENG for ENG-123).
func ValidateLinearTeamKey(key string) error {
	if linearTeamKey.MatchString(key) {
		return nil
	}
	return fmt.Errorf("%q is not a Linear team key: want the prefix of the team's issue identifiers (ENG for ENG-123), 1 to 10 letters or digits", truncate(key, 40))
}

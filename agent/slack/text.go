package slack

import (
	"regexp"
	"strings"
)

var (
	// mentionRe matches a user mention as Slack encodes it: <@U123> or <@U123|name>.
	mentionRe = regexp.MustCompile(`<@[A-Z0-9]+(\|[^>]*)?>`)
	// repoShortRe matches repo:org/name (a GitHub repository).
	repoShortRe = regexp.MustCompile(`(?:^|\s)repo:\s*([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?)(?:\.git)?(?:\s|$)`)
	// linkRe matches a link as Slack encodes it: <https://...> or <https://...|label>.
	linkRe = regexp.MustCompile(`<(https?://[^|>]+)(\|[^>]*)?>`)
	// repoLinkRe matches a link that may be a repository (https://host/org/name,
	// optionally .git); which ones are is up to isRepoLink.
	repoLinkRe = regexp.MustCompile(`^https://([^/\s:@]+)/[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+?(\.git)?/?$`)
)

// Request is what a message asks for: the repository it names (empty: none) and the
// prompt, the text without the bot's mention and the repository.
type Request struct {
	Repo   string
	Prompt string
}

// DefaultRepoHosts are the hosts whose https://HOST/org/name links name a repository
// without ending in .git.
var DefaultRepoHosts = []string{"github.com", "gitlab.com", "bitbucket.org"}

// ParseText reads a message's text: "repo:org/name" names https://github.com/org/name;
// otherwise the first link to a repository names that one: https://HOST/org/name on
// one of repoHosts, or any https://host/org/name.git. Other links (documentation, a
// log, an issue) are not taken for the repository, so a message citing one still
// gets the channel's default. Mentions and the repo: token are removed from the
// prompt; links stay in it (as plain URLs), since they may matter to the task.
func ParseText(text string, repoHosts ...string) Request {
	var r Request
	text = mentionRe.ReplaceAllString(text, "")
	if m := repoShortRe.FindStringSubmatchIndex(text); m != nil {
		r.Repo = "https://github.com/" + text[m[2]:m[3]]
		text = text[:m[0]] + " " + text[m[1]:]
	}
	text = linkRe.ReplaceAllStringFunc(text, func(s string) string {
		u := linkRe.FindStringSubmatch(s)[1]
		if r.Repo == "" && isRepoLink(u, repoHosts) {
			r.Repo = strings.TrimSuffix(u, "/")
		}
		return u
	})
	text = strings.NewReplacer("&lt;", "<", "&gt;", ">", "&amp;", "&").Replace(text)
	r.Prompt = strings.TrimSpace(strings.Join(strings.FieldsFunc(text, func(c rune) bool { return c == ' ' || c == '\t' }), " "))
	return r
}

// isRepoLink reports whether u names a repository (see ParseText).
func isRepoLink(u string, hosts []string) bool {
	m := repoLinkRe.FindStringSubmatch(u)
	if m == nil {
		return false
	}
	if m[2] != "" {
		return true
	}
	for _, h := range hosts {
		if strings.EqualFold(m[1], h) {
			return true
		}
	}
	return false
}

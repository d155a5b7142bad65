package server

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cakeai/cake-agents/agent/sessions"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Limits on session settings; larger values are almost always a typo.
const (
	maxIdleTimeout = 7 * 24 * time.Hour
	maxTTL         = 90 * 24 * time.Hour
)

var (
	branchRe = regexp.MustCompile(`^[A-Za-z0-9._/-]{1,255}$`)
	modelRe  = regexp.MustCompile(`^[A-Za-z0-9._:/@-]{1,200}$`)
)

func validateBranch(b string) error {
	if b == "" {
		return nil
	}
	if !branchRe.MatchString(b) || strings.HasPrefix(b, "-") || strings.Contains(b, "..") || strings.HasSuffix(b, ".lock") || strings.HasSuffix(b, "/") {
		return fmt.Errorf("branch: %q is not a valid git branch name", b)
	}
	return nil
}

func validateTitle(t string) error {
	if utf8.RuneCountInString(t) > apiv1.MaxTitleLen {
		return fmt.Errorf("title: longer than %d characters", apiv1.MaxTitleLen)
	}
	for _, r := range t {
		if unicode.IsControl(r) {
			return errors.New("title: must not contain control characters such as newlines")
		}
	}
	return nil
}

func validateLimit(name string, d *apiv1.Duration, limit time.Duration) error {
	if d == nil {
		return nil
	}
	if d.Duration < 0 {
		return fmt.Errorf("%s: must not be negative", name)
	}
	if d.Duration > limit {
		return fmt.Errorf("%s: %s is longer than the maximum %s", name, d.Duration, limit)
	}
	if d.Duration > 0 && d.Duration < time.Minute {
		return fmt.Errorf("%s: %s is shorter than one minute", name, d.Duration)
	}
	return nil
}

func validateCreate(req *apiv1.CreateSessionRequest) error {
	var errs []string
	add := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	add(validateTitle(req.Title))
	if req.Repo != "" {
		// The rule the session's init container applies before it clones.
		if err := apiv1.ValidateRepoURL(req.Repo); err != nil {
			errs = append(errs, "repo: "+err.Error())
		}
	}
	add(validateBranch(req.Branch))
	if req.Branch != "" && req.Repo == "" {
		errs = append(errs, "branch: set repo too, a branch needs a repository")
	}
	if len(req.Prompt) > apiv1.MaxPromptBytes {
		errs = append(errs, fmt.Sprintf("prompt: %d bytes is more than the maximum %d", len(req.Prompt), apiv1.MaxPromptBytes))
	}
	if !utf8.ValidString(req.Prompt) {
		errs = append(errs, "prompt: not valid UTF-8")
	}
	if req.Model != "" && !modelRe.MatchString(req.Model) {
		errs = append(errs, fmt.Sprintf("model: %q is not a model name such as litellm/gpt-4o", req.Model))
	}
	add(validateLimit("idleTimeout", req.IdleTimeout, maxIdleTimeout))
	add(validateLimit("ttl", req.TTL, maxTTL))
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// withinMaxima checks the idle timeout and TTL a create or update asks for (nil: not
// asked) against the admin's maxima (0: none): with a maximum set, a longer value and
// "never" (0) are refused, naming it.
func withinMaxima(idle, ttl *apiv1.Duration, maxIdle, maxTTL time.Duration) error {
	var errs []string
	for _, lim := range []struct {
		name, value string
		d           *apiv1.Duration
		max         time.Duration
	}{
		{"idleTimeout", "sessions.maxIdleTimeout", idle, maxIdle},
		{"ttl", "sessions.maxTTL", ttl, maxTTL},
	} {
		switch {
		case lim.d == nil || lim.max <= 0:
		case lim.d.Duration == 0:
			errs = append(errs, fmt.Sprintf("%s: 0 (never) is not allowed here: the maximum is %s (chart value %s); ask for %s or less", lim.name, lim.max, lim.value, lim.max))
		case lim.d.Duration > lim.max:
			errs = append(errs, fmt.Sprintf("%s: %s is longer than the maximum %s (chart value %s)", lim.name, lim.d.Duration, lim.max, lim.value))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// orNever turns a create's explicit 0 into sessions.Never, which the controller stores as
// none instead of applying the default.
func orNever(d time.Duration) time.Duration {
	if d == 0 {
		return sessions.Never
	}
	return d
}

package cmd

import (
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Sessions print as objects of the virtual kind Session.
const (
	sessionKind     = "Session"
	sessionListKind = "SessionList"
)

// sessionObject wraps s in an unstructured object: apiVersion agents.cake.ai/v1, kind
// Session, metadata.name = the id, and every wire field at the top level (.state,
// .owner, .repo, ...), so `-o jsonpath={.state}` reads like the API.
func sessionObject(s apiv1.Session) (*unstructured.Unstructured, error) {
	return wireObject(s, sessionKind, s.ID, s.CreatedAt)
}

// Print writes sessions to out; list selects the list form for json/yaml/jsonpath.
func (f *PrintFlags) Print(out io.Writer, sessions []apiv1.Session, list bool) error {
	objs, err := wireObjects(sessions, sessionObject)
	if err != nil {
		return err
	}
	return f.printObjects(out, objs, sessionListKind, list, func(w io.Writer, wide bool) error {
		return f.printTable(w, sessions, wide)
	})
}

func (f *PrintFlags) printTable(out io.Writer, sessions []apiv1.Session, wide bool) error {
	w := printers.GetNewTabWriter(out)
	if !f.NoHeaders {
		h := "NAME\tTITLE\tSTATE\tOWNER\tREPO\tAGE"
		if wide {
			h += "\tBRANCH\tMODEL\tPRIVATE\tPOD\tSTART\tLAST ACTIVITY\tREASON"
			if f.single {
				h += "\tSPEND\tPULL REQUEST"
			}
		}
		fmt.Fprintln(w, h)
	}
	for _, s := range sessions {
		row := []string{s.ID, dash(truncateCell(s.Title, 40)), string(s.State), dash(s.Owner), dash(shortRepo(s.Repo)), f.age(s.CreatedAt)}
		if wide {
			activity := "<none>"
			if !s.LastActivityAt.IsZero() {
				activity = f.age(s.LastActivityAt) + " ago"
				if s.LastActivitySource != "" {
					activity += " (" + s.LastActivitySource + ")"
				}
			}
			row = append(row, dash(branch(s)), dash(s.Model), fmt.Sprint(s.Private), dash(s.PodName), dash(string(s.StartKind)), activity, dash(s.Reason))
			if f.single {
				row = append(row, spend(s.ModelSpend), dash(s.PullRequestURL))
			}
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

// branch is the branch the session's workspace was last seen on (only `session get`
// knows it), else the one it was created with.
func branch(s apiv1.Session) string {
	if s.CurrentBranch != "" {
		return s.CurrentBranch
	}
	return s.Branch
}

// spend shows a session's LiteLLM spend in dollars; only `session get` has it (a list
// would ask LiteLLM once per session). The agent leaves it out when its sessions get no
// LiteLLM keys or LiteLLM did not answer in time.
func spend(usd *float64) string {
	if usd == nil {
		return "<unknown>"
	}
	return fmt.Sprintf("$%.4f", *usd)
}

// shortRepo drops the scheme so the REPO column stays narrow.
func shortRepo(r string) string {
	for _, p := range []string{"https://", "http://", "ssh://"} {
		r = strings.TrimPrefix(r, p)
	}
	return strings.TrimSuffix(r, ".git")
}

package cmd

import (
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Tokens print as objects of the virtual kind Token, like sessions.
const (
	tokenKind     = "Token"
	tokenListKind = "TokenList"
)

// tokenRef is how kubectl would name a token: token.agents.cake.ai/ID.
func tokenRef(id string) string { return "token." + apiv1.Group + "/" + id }

// tokenObject wraps t like sessionObject wraps a session: metadata.name is the id, every
// wire field at the top level (.name, .expiresAt, .owner, .token on create).
func tokenObject(t apiv1.Token) (*unstructured.Unstructured, error) {
	return wireObject(t, tokenKind, t.ID, t.CreatedAt)
}

// PrintTokens writes tokens to out in the chosen format.
func (f *PrintFlags) PrintTokens(out io.Writer, tokens []apiv1.Token, list bool) error {
	objs, err := wireObjects(tokens, tokenObject)
	if err != nil {
		return err
	}
	return f.printObjects(out, objs, tokenListKind, list, func(w io.Writer, wide bool) error {
		return f.printTokenTable(w, tokens, wide)
	})
}

func (f *PrintFlags) printTokenTable(out io.Writer, tokens []apiv1.Token, wide bool) error {
	w := printers.GetNewTabWriter(out)
	if !f.NoHeaders {
		h := "ID\tNAME\tEXPIRES\tLAST USED\tAGE"
		if wide {
			h += "\tOWNER\tOWNER ID"
		}
		fmt.Fprintln(w, h)
	}
	now := f.now()
	for _, t := range tokens {
		expires := "<none>"
		if t.ExpiresAt != nil {
			if left := t.ExpiresAt.Sub(now); left > 0 {
				expires = "in " + duration.HumanDuration(left)
			} else {
				expires = "expired " + duration.HumanDuration(-left) + " ago"
			}
		}
		used := "<never>"
		if t.LastUsedAt != nil {
			used = f.age(*t.LastUsedAt) + " ago"
		}
		row := []string{t.ID, truncateCell(t.Name, 40), expires, used, f.age(t.CreatedAt)}
		if wide {
			row = append(row, dash(t.Owner), dash(t.OwnerID))
		}
		fmt.Fprintln(w, strings.Join(row, "\t"))
	}
	return w.Flush()
}

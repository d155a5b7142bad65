package cmd

import (
	"fmt"
	"io"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/cli-runtime/pkg/printers"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// Credentials print as objects of the virtual kind Credential named by their host.
const (
	credentialKind     = "Credential"
	credentialListKind = "CredentialList"
)

func credentialObject(c apiv1.Credential) (*unstructured.Unstructured, error) {
	return wireObject(c, credentialKind, c.Host, c.CreatedAt)
}

// PrintCredentials writes credentials to out in the chosen format.
func (f *PrintFlags) PrintCredentials(out io.Writer, creds []apiv1.Credential) error {
	objs, err := wireObjects(creds, credentialObject)
	if err != nil {
		return err
	}
	return f.printObjects(out, objs, credentialListKind, true, func(w io.Writer, wide bool) error {
		tw := printers.GetNewTabWriter(w)
		if !f.NoHeaders {
			header := "HOST\tKIND\tUSERNAME\tFINGERPRINT\tUPDATED\tAGE"
			if wide {
				header += "\tPUBLIC KEY"
			}
			fmt.Fprintln(tw, header)
		}
		for _, c := range creds {
			cells := []string{c.Host, c.Kind, dash(truncateCell(c.Username, 40)), dash(c.Fingerprint), f.age(c.UpdatedAt) + " ago", f.age(c.CreatedAt)}
			if wide {
				// Whole: it is what gets pasted at the host.
				cells = append(cells, dash(c.PublicKey))
			}
			fmt.Fprintln(tw, strings.Join(cells, "\t"))
		}
		return tw.Flush()
	})
}

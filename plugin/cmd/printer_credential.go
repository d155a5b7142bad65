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
	return f.printObjects(out, objs, credentialListKind, true, func(w io.Writer, _ bool) error {
		tw := printers.GetNewTabWriter(w)
		if !f.NoHeaders {
			fmt.Fprintln(tw, "HOST\tKIND\tUSERNAME\tUPDATED\tAGE")
		}
		for _, c := range creds {
			fmt.Fprintln(tw, strings.Join([]string{c.Host, c.Kind, truncateCell(c.Username, 40), f.age(c.UpdatedAt) + " ago", f.age(c.CreatedAt)}, "\t"))
		}
		return tw.Flush()
	})
}

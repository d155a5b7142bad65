package cmd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/cakeai/cake-agents/pkg/client"
)

// NewCmdCompletion returns `completion`, which prints shell completion scripts for the
// kubectl-agents binary. For `kubectl agents <TAB>`, kubectl itself calls the
// kubectl_complete-agents shim shipped beside the binary instead.
func NewCmdCompletion(streams genericiooptions.IOStreams) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Long: `Print a completion script for your shell. It completes the kubectl-agents
command; "kubectl agents <TAB>" works through kubectl's own completion once the
kubectl_complete-agents shim (installed with the plugin) is on your PATH.`,
		Example: `  # bash, for this shell
  source <(kubectl agents completion bash)

  # zsh, for every shell
  kubectl agents completion zsh > "${fpath[1]}/_kubectl-agents"

  # fish
  kubectl agents completion fish > ~/.config/fish/completions/kubectl-agents.fish`,
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(streams.Out, true)
			case "zsh":
				return root.GenZshCompletion(streams.Out)
			case "fish":
				return root.GenFishCompletion(streams.Out, true)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(streams.Out)
			}
			return fmt.Errorf("unsupported shell %q: use bash, zsh, fish or powershell", args[0])
		},
	}
}

// completionTimeout bounds the agent round trip of a shell completion: a slow answer is
// worse than none.
const completionTimeout = 5 * time.Second

// candidate is one name a completion may offer, with its description.
type candidate struct{ name, desc string }

// completeFromAgent completes names listed by the agent: those starting with what was
// typed, leaving out the ones already on the command line.
func completeFromAgent(f *Factory, list func(ctx context.Context, c *client.Client) ([]candidate, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		c, err := f.Agent(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		cands, err := list(ctx, c)
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		seen := map[string]bool{}
		for _, a := range args {
			seen[a] = true
		}
		var out []string
		for _, cand := range cands {
			if !seen[cand.name] && strings.HasPrefix(cand.name, toComplete) {
				out = append(out, cand.name+"\t"+cand.desc)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeSessions completes session ids (with their state and title as descriptions) for
// the first argument, or for every argument when multi is set.
func completeSessions(f *Factory, multi bool) cobra.CompletionFunc {
	sessions := completeFromAgent(f, func(ctx context.Context, c *client.Client) ([]candidate, error) {
		list, err := c.ListAllSessions(ctx, client.ListOptions{})
		out := make([]candidate, 0, len(list))
		for _, s := range list {
			desc := string(s.State)
			if s.Title != "" {
				desc += " " + s.Title
			}
			out = append(out, candidate{s.ID, desc})
		}
		return out, err
	})
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !multi {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return sessions(cmd, args, toComplete)
	}
}

// completeTokens completes the caller's token ids, with their names as descriptions.
func completeTokens(f *Factory) cobra.CompletionFunc {
	return completeFromAgent(f, func(ctx context.Context, c *client.Client) ([]candidate, error) {
		l, err := c.ListTokens(ctx, "")
		if err != nil {
			return nil, err
		}
		out := make([]candidate, 0, len(l.Items))
		for _, t := range l.Items {
			out = append(out, candidate{t.ID, t.Name})
		}
		return out, nil
	})
}

// completeNamespaces completes --agent-namespace from the cluster.
func completeNamespaces(f *Factory) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		kube, _, err := f.Kube()
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveError
		}
		var out []string
		for _, ns := range list.Items {
			if strings.HasPrefix(ns.Name, toComplete) {
				out = append(out, ns.Name)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

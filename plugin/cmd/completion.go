package cmd

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"
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

package app

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/cakeai/cake-agents/agent/sessioninit"
	"github.com/cakeai/cake-agents/agent/store"
	"github.com/cakeai/cake-agents/agent/store/storeopen"
)

func newMigrateCommand(out, errOut io.Writer) *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Apply the database schema migrations and exit",
		Long: `Apply the embedded schema migrations to the database and exit.

The agent also migrates at start (under a lock, so replicas are safe); this command
lets an operator do it ahead of an upgrade. Running it twice is a no-op.`,
		Example: `  agent migrate --database-url sqlite:///tmp/agents.db
  DATABASE_URL=postgres://agents@db/agents agent migrate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := &Config{LogFormat: "text", LogLevel: "info"}
			log := NewLogger(cfg, errOut)
			st, err := storeopen.Open(cmd.Context(), storeopen.Options{URL: url, Logger: log, SkipMigrate: true})
			if err != nil {
				return err
			}
			defer func() { _ = st.Close() }()
			m, ok := st.(store.Migrator)
			if !ok {
				return errors.New("this store cannot be migrated")
			}
			applied, err := m.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			cur, latest, err := m.SchemaVersion(cmd.Context())
			if err != nil {
				return err
			}
			if len(applied) == 0 {
				_, err = fmt.Fprintf(out, "database schema is up to date (version %d)\n", cur)
				return err
			}
			_, err = fmt.Fprintf(out, "applied migrations %v; database schema is at version %d of %d\n", applied, cur, latest)
			return err
		},
	}
	cmd.Flags().StringVar(&url, "database-url", os.Getenv("DATABASE_URL"), "database to migrate; empty uses the PG* environment variables [$DATABASE_URL]")
	return cmd
}

func newSessionInitCommand(errOut io.Writer) *cobra.Command {
	var o sessioninit.Options
	cmd := &cobra.Command{
		Use:   "session-init",
		Short: "Prepare a session's workspace (runs as the session pod's init container)",
		Long: `Prepare a session's workspace: clone the repository and write the OpenCode
configuration. The agent runs this as the data-plane-init container of every
session pod; API keys are referenced by environment variable, never written.`,
		Example: `  agent session-init --repo https://github.com/org/repo.git --branch main \
    --workspace /workspace --config /etc/opencode/opencode.json --model litellm/gpt-4o \
    --litellm-base-url http://litellm:4000/v1`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Stderr = errOut
			return sessioninit.Run(cmd.Context(), o)
		},
	}
	o.BindFlags(cmd.Flags())
	return cmd
}

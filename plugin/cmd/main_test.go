package cmd

import (
	"testing"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// TestMain stops the local cluster the integration tests may have started.
func TestMain(m *testing.M) { testcluster.Main(m) }

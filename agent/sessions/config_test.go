package sessions

import (
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

func TestNewRejectsBadConfig(t *testing.T) {
	for name, mutate := range map[string]func(*Config){
		"no namespace":  func(c *Config) { c.Namespace = "" },
		"no image":      func(c *Config) { c.DataPlaneImage = "" },
		"bad quantity":  func(c *Config) { c.MemoryLimit = "lots" },
		"bad size":      func(c *Config) { c.StorageSize = "big" },
		"lease missing": func(c *Config) { c.LeaderElection = true },
		"lease shorter than renew": func(c *Config) {
			c.LeaderElection, c.LeaseNamespace, c.LeaseName, c.Identity = true, "ns", "l", "me"
			c.LeaseDuration, c.RenewDeadline = 5*time.Second, 5*time.Second
		},
		"renew too close to retry": func(c *Config) {
			c.LeaderElection, c.LeaseNamespace, c.LeaseName, c.Identity = true, "ns", "l", "me"
			c.RenewDeadline, c.RetryPeriod = 2*time.Second, 2*time.Second
		},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("ns")
			mutate(&cfg)
			if _, err := New(cfg, fake.NewClientset(), nil, nil); err == nil {
				t.Fatal("New accepted a bad config")
			}
		})
	}
}

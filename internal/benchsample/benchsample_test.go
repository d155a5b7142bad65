package benchsample

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	var s Samples
	for _, ms := range []int{5, 1, 4, 2, 3} {
		s.Add(time.Duration(ms) * time.Millisecond)
	}
	for q, want := range map[float64]time.Duration{0: time.Millisecond, 0.5: 3 * time.Millisecond, 0.99: 5 * time.Millisecond, 1: 5 * time.Millisecond} {
		if got := s.Quantile(q); got != want {
			t.Errorf("Quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if (&Samples{}).Quantile(0.5) != 0 {
		t.Error("Quantile of no samples is not 0")
	}
}

func TestN(t *testing.T) {
	t.Setenv(EnvSamples, "")
	if got := N(t, 3); got != MinSamples {
		t.Errorf("N(3) = %d, want the floor %d", got, MinSamples)
	}
	if got := N(t, 20); got != 20 {
		t.Errorf("N(20) = %d", got)
	}
	t.Setenv(EnvSamples, "1")
	if got := N(t, 20); got != 1 {
		t.Errorf("N(20) with %s=1 = %d", EnvSamples, got)
	}
}

func TestSize(t *testing.T) {
	t.Setenv(EnvSessions, "200")
	if Sessions() != 200 {
		t.Errorf("Sessions() = %d", Sessions())
	}
	t.Setenv(EnvSessions, "x")
	if Sessions() != 10000 {
		t.Errorf("Sessions() with a bad value = %d", Sessions())
	}
}

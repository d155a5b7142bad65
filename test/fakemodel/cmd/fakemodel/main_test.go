package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// syncWriter hands the first write (the URL line) to a channel.
type syncWriter chan string

func (w syncWriter) Write(p []byte) (int, error) {
	w <- string(p)
	return len(p), nil
}

func TestRunServesUntilCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	out := make(syncWriter, 1)
	errc := make(chan error, 1)
	go func() { errc <- run(ctx, []string{"-listen", "127.0.0.1:0"}, out) }()

	var base string
	select {
	case line := <-out:
		base = strings.TrimSpace(line)
	case err := <-errc:
		t.Fatalf("run ended early: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no URL printed")
	}
	if !strings.HasPrefix(base, "http://127.0.0.1:") || !strings.HasSuffix(base, "/v1") {
		t.Fatalf("printed %q, want a base URL ending in /v1", base)
	}
	resp, err := http.Get(base + "/models")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), `"fake-model"`) {
		t.Fatalf("models: %s", b)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

func TestRunRejectsInvalidAddress(t *testing.T) {
	if err := run(context.Background(), []string{"-listen", "256.0.0.1:1"}, io.Discard); err == nil {
		t.Fatal("an invalid listen address was accepted")
	}
}

package github

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/test/fakegithub"
)

func TestDeviceFlow(t *testing.T) {
	gh := fakegithub.New("Iv1.client")
	srv := httptest.NewServer(gh)
	defer srv.Close()
	d := &DeviceFlow{BaseURL: srv.URL, ClientID: "Iv1.client", Scope: "repo", HTTP: srv.Client()}
	ctx := t.Context()

	dc, err := d.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if dc.UserCode == "" || dc.VerificationURI != "https://github.com/login/device" || dc.Interval != 1 || dc.ExpiresIn != 900 {
		t.Errorf("device code %+v", dc)
	}
	if _, _, err := d.Poll(ctx, dc.DeviceCode); !errors.Is(err, ErrPending) {
		t.Errorf("before approval: %v", err)
	}
	gh.SlowDown(dc.UserCode)
	if _, every, err := d.Poll(ctx, dc.DeviceCode); !errors.Is(err, ErrSlowDown) || every != 6*time.Second {
		t.Errorf("slow_down: %v %v", every, err)
	}
	gh.Approve(dc.UserCode, "gho_granted")
	tok, _, err := d.Poll(ctx, dc.DeviceCode)
	if err != nil || tok.AccessToken != "gho_granted" {
		t.Fatalf("after approval: %+v %v", tok, err)
	}

	for name, act := range map[string]func(string){"denied": func(c string) { gh.Deny(c) }, "expired": gh.Expire} {
		dc, err := d.Start(ctx)
		if err != nil {
			t.Fatal(err)
		}
		act(dc.UserCode)
		_, _, err = d.Poll(ctx, dc.DeviceCode)
		if want := map[string]error{"denied": ErrDenied, "expired": ErrExpired}[name]; !errors.Is(err, want) {
			t.Errorf("%s: %v", name, err)
		}
	}

	bad := &DeviceFlow{BaseURL: srv.URL, ClientID: "wrong", HTTP: srv.Client()}
	if _, err := bad.Start(ctx); err == nil || !strings.Contains(err.Error(), "incorrect_client_credentials") || !strings.Contains(err.Error(), "client id") {
		t.Errorf("wrong client id: %v", err)
	}
}

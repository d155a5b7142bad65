package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/slack"
	"github.com/cakeai/cake-agents/agent/store"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/test/fakeslack"
)

// slackConversation adds what the Slack integration needs to the API's fake.
type slackConversation struct{ *fakeConversation }

func (slackConversation) Busy(context.Context, *store.Session) (bool, error) { return false, nil }

// TestSlackEventsAreServedWithoutUserAuthentication: Slack's deliveries reach the
// integration without the API's authentication (Slack signs them instead), a bad
// signature is 401 from the integration, and without Slack configured there is no route.
func TestSlackEventsAreServedWithoutUserAuthentication(t *testing.T) {
	const secret = "server-test-signing-secret"
	e := newEnvWith(t, nil, func(o *Options) {
		o.Webhooks = map[string]http.Handler{"POST /integrations/slack/events": slack.New(slack.Options{SigningSecret: secret,
			Client: &slack.Client{APIURL: "http://127.0.0.1:9/api", Token: "x"},
			Store:  o.Store, Sessions: o.Sessions, Conversation: slackConversation{o.Conversation.(*fakeConversation)}})}
	})
	post := func(body []byte, secret string) (int, string) {
		req, err := fakeslack.Request(e.srv.URL+"/integrations/slack/events", secret, body, time.Now(), 0)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	challenge := []byte(`{"token":"t","challenge":"abc123","type":"url_verification"}`)
	if code, body := post(challenge, secret); code != http.StatusOK || !strings.Contains(body, `"challenge":"abc123"`) {
		t.Errorf("url_verification: %d %s", code, body)
	}
	if code, body := post(challenge, "wrong"); code != http.StatusUnauthorized || !strings.Contains(body, "invalid Slack signature") {
		t.Errorf("bad signature: %d %s", code, body)
	}

	off := newEnv(t, nil)
	req, _ := fakeslack.Request(off.srv.URL+"/integrations/slack/events", secret, challenge, time.Now(), 0)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("without Slack: %d, want no route", resp.StatusCode)
	}
}

func TestSlackChannelRepositoryIsAdminOnly(t *testing.T) {
	e := newEnv(t, nil)
	path := "/api/v1/integrations/slack/channels/C0DEV"
	for _, m := range []string{"GET", "PUT"} {
		if code, body := e.do("alice", m, path, apiv1.SlackChannel{Repo: "https://github.com/acme/x"}); code != http.StatusForbidden || errorOf(t, body).Code != apiv1.CodeForbidden {
			t.Errorf("%s as a user: %d %s", m, code, body)
		}
	}
	if code, body := e.do("root", "PUT", path, apiv1.SlackChannel{Repo: "https://github.com/acme/widgets"}); code != http.StatusOK {
		t.Fatalf("put: %d %s", code, body)
	}
	code, body := e.do("root", "GET", path, nil)
	var got apiv1.SlackChannel
	if code != http.StatusOK || json.Unmarshal(body, &got) != nil || got != (apiv1.SlackChannel{Channel: "C0DEV", Repo: "https://github.com/acme/widgets"}) {
		t.Fatalf("get: %d %s", code, body)
	}
	if v, err := e.st.GetSetting(context.Background(), slack.ChannelRepoSetting("C0DEV")); err != nil || v != "https://github.com/acme/widgets" {
		t.Errorf("stored %q, %v", v, err)
	}
	if code, body := e.do("root", "PUT", "/api/v1/integrations/slack/channels/general", apiv1.SlackChannel{}); code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "channel id") {
		t.Errorf("a channel name: %d %s", code, body)
	}
	if code, body := e.do("root", "PUT", path, apiv1.SlackChannel{Repo: "ext::sh"}); code != http.StatusBadRequest || !strings.Contains(errorOf(t, body).Message, "repo: ") {
		t.Errorf("a bad repo: %d %s", code, body)
	}
	if code, _ := e.do("root", "PUT", path, apiv1.SlackChannel{}); code != http.StatusOK {
		t.Errorf("clear: %d", code)
	}
	if code, body := e.do("root", "GET", path, nil); code != http.StatusOK || json.Unmarshal(body, &got) != nil || got.Repo != "" {
		t.Errorf("after clear: %d %s", code, body)
	}
	page, err := e.st.ListAudit(context.Background(), store.AuditFilter{Target: "C0DEV"})
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for _, ev := range page.Items {
		actions = append(actions, ev.Action+" "+ev.Outcome)
	}
	if strings.Join(actions, ",") != "slack.channel.put success,slack.channel.put success,slack.channel.put denied,slack.channel.get denied" {
		t.Errorf("audit: %v", actions)
	}
}

type staticIntegration struct{ st apiv1.Integration }

func (s staticIntegration) Name() string { return s.st.Name }

func (s staticIntegration) Check(context.Context) apiv1.Integration { return s.st }

func TestIntegrationsAreListedForSignedInUsers(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) {
		o.Integrations = []Integration{staticIntegration{apiv1.Integration{Name: "slack", Enabled: true, Configured: true, Reachable: true, Detail: "bot @cake"}}}
	})
	code, body := e.do("alice", "GET", "/api/v1/integrations", nil)
	var l apiv1.IntegrationList
	if code != http.StatusOK || json.Unmarshal(body, &l) != nil || len(l.Items) != 1 || l.Items[0].Detail != "bot @cake" || !l.Items[0].Reachable {
		t.Fatalf("%d %s", code, body)
	}
	if code, _ := e.do("nobody", "GET", "/api/v1/integrations", nil); code != http.StatusUnauthorized {
		t.Errorf("anonymous: %d", code)
	}
}

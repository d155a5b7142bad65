// Package fakeslack is a local stand-in for the Slack Web API methods the agent calls
// (auth.test, users.info, chat.postMessage, chat.update), checking the bot token on
// every call and recording the messages posted, and a sender of Events API requests
// signed as Slack documents (v0 signature over the raw body).
package fakeslack

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Message is a message the bot posted (and its current text after updates).
type Message struct {
	Channel  string
	TS       string
	ThreadTS string
	Text     string
	// Updates counts the chat.update calls on it.
	Updates int
}

// Server is the fake Web API. Its zero value is not usable: call New.
type Server struct {
	// Token is the bot token every call must carry.
	Token string

	mu       sync.Mutex
	users    map[string]user
	messages []*Message
	next     int
	calls    map[string]int
	failNext map[string]string
}

// New returns a fake whose calls must carry token.
func New(token string) *Server {
	return &Server{Token: token, users: map[string]user{}, calls: map[string]int{}, failNext: map[string]string{}}
}

// FailNext makes the next call of method fail with Slack's error code (e.g.
// "ratelimited"), as Slack does when it is busy.
func (s *Server) FailNext(method, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failNext[method] = code
}

// user is users.info's user object, the fields the agent reads.
type user struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Profile profile `json:"profile"`
}

type profile struct {
	Email    string `json:"email,omitempty"`
	RealName string `json:"real_name"`
}

// AddUser registers a Slack user with an email ("" : none shared).
func (s *Server) AddUser(id, email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[id] = user{ID: id, Name: strings.ToLower(id), Profile: profile{Email: email, RealName: id}}
}

// Messages returns copies of the messages posted in channel's thread threadTS (all of
// the channel's when threadTS is empty), oldest first.
func (s *Server) Messages(channel, threadTS string) []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Message
	for _, m := range s.messages {
		if m.Channel == channel && (threadTS == "" || m.ThreadTS == threadTS) {
			out = append(out, *m)
		}
	}
	return out
}

// Calls returns how many times a method was called (with a valid token).
func (s *Server) Calls(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[method]
}

// ServeHTTP implements the Web API at /api/METHOD (and /METHOD).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	method := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/api"), "/")
	reply := func(v map[string]any) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v)
	}
	fail := func(code string) { reply(map[string]any{"ok": false, "error": code}) }
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	// Slack answers a missing or wrong token with 200 and ok:false.
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		fail("invalid_auth")
		return
	}
	args := map[string]any{}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		if err := json.NewDecoder(r.Body).Decode(&args); err != nil {
			fail("invalid_json")
			return
		}
	}
	_ = r.ParseForm()
	for k, v := range r.Form {
		args[k] = v[0]
	}
	str := func(k string) string { v, _ := args[k].(string); return v }
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[method]++
	if code, ok := s.failNext[method]; ok {
		delete(s.failNext, method)
		fail(code)
		return
	}
	switch method {
	case "auth.test":
		reply(map[string]any{"ok": true, "url": "https://fake.slack.test/", "team": "Fake", "team_id": "T0FAKE", "user": "cake", "user_id": "U0BOT", "bot_id": "B0BOT"})
	case "users.info":
		u, ok := s.users[str("user")]
		if !ok {
			fail("user_not_found")
			return
		}
		reply(map[string]any{"ok": true, "user": u})
	case "chat.postMessage":
		if str("channel") == "" || str("text") == "" {
			fail("no_text")
			return
		}
		s.next++
		m := &Message{Channel: str("channel"), ThreadTS: str("thread_ts"), Text: str("text"),
			TS: fmt.Sprintf("%d.%06d", time.Now().Unix(), s.next)}
		s.messages = append(s.messages, m)
		reply(map[string]any{"ok": true, "channel": m.Channel, "ts": m.TS})
	case "chat.update":
		i := slices.IndexFunc(s.messages, func(m *Message) bool { return m.Channel == str("channel") && m.TS == str("ts") })
		if i < 0 {
			fail("message_not_found")
			return
		}
		s.messages[i].Text = str("text")
		s.messages[i].Updates++
		reply(map[string]any{"ok": true, "channel": str("channel"), "ts": str("ts")})
	default:
		fail("unknown_method")
	}
}

// Start serves the fake on a local port until the returned server is closed; its URL
// plus "/api" is the agent's --slack-api-url.
func (s *Server) Start() *httptest.Server { return httptest.NewServer(s) }

// Event is an Events API event_callback body, as Slack sends it.
type Event struct {
	EventID string
	// Type is "app_mention" or "message".
	Type        string
	User        string
	Text        string
	Channel     string
	ChannelType string // "channel", "im"
	TS          string
	ThreadTS    string
}

// Body returns the JSON body of an event_callback delivering e.
func (e Event) Body() []byte {
	ev := map[string]any{"type": e.Type, "user": e.User, "text": e.Text, "channel": e.Channel, "ts": e.TS, "event_ts": e.TS}
	if e.ChannelType != "" {
		ev["channel_type"] = e.ChannelType
	}
	if e.ThreadTS != "" {
		ev["thread_ts"] = e.ThreadTS
	}
	b, _ := json.Marshal(map[string]any{
		"token": "deprecated-verification-token", "team_id": "T0FAKE", "api_app_id": "A0FAKE",
		"event": ev, "type": "event_callback", "event_id": e.EventID,
		"event_time": time.Now().Unix(), "authorizations": []map[string]any{{"user_id": "U0BOT", "is_bot": true}},
	})
	return b
}

// Request builds a delivery of body to url signed with secret at time at, as Slack
// sends it; retry > 0 adds Slack's retry headers.
func Request(url, secret string, body []byte, at time.Time, retry int) (*http.Request, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	ts := strconv.FormatInt(at.Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Slack-Request-Timestamp", ts)
	req.Header.Set("X-Slack-Signature", sign(secret, ts, body))
	req.Header.Set("User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
	if retry > 0 {
		req.Header.Set("X-Slack-Retry-Num", strconv.Itoa(retry))
		req.Header.Set("X-Slack-Retry-Reason", "http_timeout")
	}
	return req, nil
}

// sign is Slack's v0 request signature, written here from Slack's documentation
// independently of the agent's, so a test of the agent against it proves something.
func sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + timestamp + ":" + string(body)))
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

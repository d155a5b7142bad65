package slack

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"time"
)

// MaxSkew is how old (or how far in the future) a request's timestamp may be: Slack
// advises five minutes, so a captured request cannot be replayed later.
const MaxSkew = 5 * time.Minute

// Sign returns the X-Slack-Signature of body sent at timestamp (Unix seconds) with
// secret: "v0=" and the hex HMAC-SHA256 of "v0:<timestamp>:<body>", as Slack documents.
func Sign(secret, timestamp string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte("v0:" + timestamp + ":"))
	m.Write(body)
	return "v0=" + hex.EncodeToString(m.Sum(nil))
}

// Verify checks a request's X-Slack-Request-Timestamp and X-Slack-Signature against
// the raw body: the timestamp within MaxSkew of now, the signature equal (in constant
// time) to Sign's.
func Verify(secret, timestamp, signature string, body []byte, now time.Time) error {
	if secret == "" {
		return errors.New("no signing secret is configured")
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("missing or malformed X-Slack-Request-Timestamp")
	}
	if d := now.Sub(time.Unix(sec, 0)); d > MaxSkew || d < -MaxSkew {
		return errors.New("X-Slack-Request-Timestamp is more than 5 minutes away from now")
	}
	if !hmac.Equal([]byte(Sign(secret, timestamp, body)), []byte(signature)) {
		return errors.New("X-Slack-Signature does not match the body")
	}
	return nil
}

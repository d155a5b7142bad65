package sessions

import (
	"crypto/rand"
	"encoding/base64"
	"math/big"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// PodName is the name of a session's pod, and of its Secret.
func PodName(id string) string { return "cake-session-" + id }

// SecretName is the name of the per-session Secret holding the OpenCode password.
func SecretName(id string) string { return PodName(id) }

// PVCName is the name of a persistent session's workspace claim.
func PVCName(id string) string { return PodName(id) + "-workspace" }

const (
	idLen     = 8
	idLetters = "abcdefghijklmnopqrstuvwxyz"
	idChars   = idLetters + "0123456789"
)

// NewID returns a random session id: 8 characters of [a-z0-9] starting with a letter,
// so it is a valid DNS label on its own and inside every object name derived from it.
func NewID() string {
	b := make([]byte, idLen)
	b[0] = idLetters[randIndex(len(idLetters))]
	for i := 1; i < idLen; i++ {
		b[i] = idChars[randIndex(len(idChars))]
	}
	return string(b)
}

// ValidID reports whether id is a session id: the rule the API, the web UI and the
// plugin apply too (apiv1.ValidateSessionID), which every id NewID makes satisfies.
func ValidID(id string) bool { return apiv1.ValidateSessionID(id) == nil }

func randIndex(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		// crypto/rand never fails on supported platforms; a failure means the
		// process cannot produce secrets at all.
		panic("crypto/rand failed: " + err.Error())
	}
	return int(v.Int64())
}

// newPassword returns 32 random bytes, base64url-encoded, for OPENCODE_SERVER_PASSWORD.
func newPassword() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

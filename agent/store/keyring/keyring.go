// Package keyring encrypts the secrets the store keeps at rest (linked credentials)
// with AES-256-GCM under keys derived (HKDF-SHA256) from the agent's auth secret.
//
// Every ciphertext names the key that sealed it, so the auth secret can be changed:
// build the keyring from the new secret plus the previous ones, and call the store's
// RotateCredentials to re-encrypt everything with the new primary key. Old keys keep
// decrypting until they are dropped from the keyring.
//
// Ciphertext layout (all of it authenticated):
//
//	version (1 byte, 1) | key id (8 bytes) | nonce (12 bytes) | GCM sealed data + tag
package keyring

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

const (
	formatVersion = 1
	keyIDLen      = 8
	nonceLen      = 12
	headerLen     = 1 + keyIDLen + nonceLen

	// salt and info strings pin the derivation to this use: the same auth secret used
	// elsewhere (session cookies, ...) never yields the same key.
	hkdfSalt     = "cake-agents/keyring/v1"
	hkdfKeyInfo  = "aes-256-gcm credential key"
	hkdfKeyIDInf = "key id"
)

// Errors returned by Decrypt (possibly wrapped).
var (
	// ErrUnknownKey: the ciphertext was sealed by a key that is not in the keyring,
	// typically because the auth secret changed and the old one was not kept.
	ErrUnknownKey = errors.New("ciphertext was encrypted with a key that is not in the keyring")
	// ErrMalformed: the bytes are not a ciphertext of this package.
	ErrMalformed = errors.New("malformed ciphertext")
	// ErrDecrypt: authentication failed (tampered data, or the wrong associated data).
	ErrDecrypt = errors.New("decryption failed: ciphertext or associated data was tampered with")
)

type key struct {
	id   [keyIDLen]byte
	aead cipher.AEAD
}

// Keyring holds one primary key (used to encrypt) and any number of older keys (used
// only to decrypt). It is immutable and safe for concurrent use.
type Keyring struct {
	primary *key
	keys    map[[keyIDLen]byte]*key
}

// New derives a keyring from the agent's auth secret (the primary key) and previous
// secrets that must still decrypt existing data. Secrets must not be empty; use at
// least 32 random bytes.
func New(secret []byte, previous ...[]byte) (*Keyring, error) {
	if len(secret) == 0 {
		return nil, errors.New("keyring: the auth secret is empty")
	}
	primary, err := derive(secret)
	if err != nil {
		return nil, err
	}
	kr := &Keyring{primary: primary, keys: map[[keyIDLen]byte]*key{primary.id: primary}}
	for i, p := range previous {
		if len(p) == 0 {
			return nil, fmt.Errorf("keyring: previous secret %d is empty", i+1)
		}
		k, err := derive(p)
		if err != nil {
			return nil, err
		}
		if _, dup := kr.keys[k.id]; !dup {
			kr.keys[k.id] = k
		}
	}
	return kr, nil
}

func derive(secret []byte) (*key, error) {
	raw, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), hkdfKeyInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("keyring: derive key: %w", err)
	}
	idBytes, err := hkdf.Key(sha256.New, secret, []byte(hkdfSalt), hkdfKeyIDInf, keyIDLen)
	if err != nil {
		return nil, fmt.Errorf("keyring: derive key id: %w", err)
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	k := &key{aead: aead}
	copy(k.id[:], idBytes)
	return k, nil
}

// PrimaryID is the id of the key Encrypt uses, as KeyID reports it.
func (k *Keyring) PrimaryID() string { return hex.EncodeToString(k.primary.id[:]) }

// Encrypt seals plaintext with the primary key. aad (associated data, e.g. the row's
// owner and provider) is authenticated but not stored: Decrypt needs the same aad,
// so a ciphertext copied to another row fails to decrypt.
func (k *Keyring) Encrypt(plaintext, aad []byte) ([]byte, error) {
	out := make([]byte, headerLen, headerLen+len(plaintext)+k.primary.aead.Overhead())
	out[0] = formatVersion
	copy(out[1:1+keyIDLen], k.primary.id[:])
	if _, err := rand.Read(out[1+keyIDLen : headerLen]); err != nil {
		return nil, fmt.Errorf("keyring: read nonce: %w", err)
	}
	return k.primary.aead.Seal(out, out[1+keyIDLen:headerLen], plaintext, additional(out[:headerLen], aad)), nil
}

// Decrypt opens a ciphertext made by Encrypt with any key of the keyring.
func (k *Keyring) Decrypt(ciphertext, aad []byte) ([]byte, error) {
	id, err := parseHeader(ciphertext)
	if err != nil {
		return nil, err
	}
	kk, ok := k.keys[id]
	if !ok {
		return nil, fmt.Errorf("%w (key id %s): configure the previous auth secret to read it", ErrUnknownKey, hex.EncodeToString(id[:]))
	}
	pt, err := kk.aead.Open(nil, ciphertext[1+keyIDLen:headerLen], ciphertext[headerLen:], additional(ciphertext[:headerLen], aad))
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}

// NeedsRotation reports whether ciphertext was sealed by a key other than the primary.
func (k *Keyring) NeedsRotation(ciphertext []byte) bool {
	id, err := parseHeader(ciphertext)
	return err != nil || id != k.primary.id
}

// KeyID returns the id of the key that sealed ciphertext.
func KeyID(ciphertext []byte) (string, error) {
	id, err := parseHeader(ciphertext)
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(id[:]), nil
}

func parseHeader(c []byte) ([keyIDLen]byte, error) {
	var id [keyIDLen]byte
	if len(c) < headerLen+16 || c[0] != formatVersion {
		return id, ErrMalformed
	}
	copy(id[:], c[1:1+keyIDLen])
	return id, nil
}

// additional binds the header (version, key id, nonce) and the caller's aad; the
// header has a fixed size, so the concatenation is unambiguous.
func additional(header, aad []byte) []byte {
	return bytes.Join([][]byte{header, aad}, nil)
}

package keyring

import (
	"bytes"
	"errors"
	"testing"
)

func TestRoundTripAndRotation(t *testing.T) {
	old, err := New([]byte("old secret, at least a few bytes"))
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("owner\x00github")
	ct, err := old.Encrypt([]byte("hunter2"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ct, []byte("hunter2")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	pt, err := old.Decrypt(ct, aad)
	if err != nil || string(pt) != "hunter2" {
		t.Fatalf("Decrypt = %q, %v", pt, err)
	}
	id, err := KeyID(ct)
	if err != nil || id != old.PrimaryID() || len(id) != 16 {
		t.Fatalf("KeyID = %q, %v; primary %q", id, err, old.PrimaryID())
	}

	// The same secret always derives the same key: a restarted agent reads its data.
	again, _ := New([]byte("old secret, at least a few bytes"))
	if pt, err := again.Decrypt(ct, aad); err != nil || string(pt) != "hunter2" {
		t.Fatalf("re-derived keyring: %q, %v", pt, err)
	}

	rotated, err := New([]byte("new secret"), []byte("old secret, at least a few bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if rotated.PrimaryID() == old.PrimaryID() {
		t.Fatal("new secret has the old key id")
	}
	if !rotated.NeedsRotation(ct) || old.NeedsRotation(ct) {
		t.Fatal("NeedsRotation wrong")
	}
	if pt, err := rotated.Decrypt(ct, aad); err != nil || string(pt) != "hunter2" {
		t.Fatalf("old key through rotated keyring: %q, %v", pt, err)
	}
	ct2, _ := rotated.Encrypt(pt, aad)
	if rotated.NeedsRotation(ct2) {
		t.Fatal("fresh ciphertext needs rotation")
	}
	if _, err := old.Decrypt(ct2, aad); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("old keyring on new ciphertext: %v, want ErrUnknownKey", err)
	}
}

func TestTamperAndAAD(t *testing.T) {
	kr, _ := New([]byte("s"))
	ct, _ := kr.Encrypt([]byte("secret"), []byte("a"))
	if _, err := kr.Decrypt(ct, []byte("b")); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("wrong aad: %v", err)
	}
	for i := range ct {
		bad := bytes.Clone(ct)
		bad[i] ^= 1
		if _, err := kr.Decrypt(bad, []byte("a")); err == nil {
			t.Fatalf("flipping byte %d went unnoticed", i)
		}
	}
	if _, err := kr.Decrypt([]byte("short"), nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short: %v", err)
	}
	a, _ := kr.Encrypt([]byte("secret"), []byte("a"))
	if bytes.Equal(a, ct) {
		t.Fatal("nonce reused")
	}
}

func TestNewRejectsEmpty(t *testing.T) {
	if _, err := New(nil); err == nil {
		t.Fatal("empty secret accepted")
	}
	if _, err := New([]byte("x"), nil); err == nil {
		t.Fatal("empty previous secret accepted")
	}
}

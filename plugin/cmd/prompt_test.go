package cmd

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// TestAskSecretDoesNotEcho: typed at a terminal, a token is read without echo (the
// terminal shows the question, never the token); piped, it is read as a line.
func TestAskSecretDoesNotEcho(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pseudo-terminal here: %v", err)
	}
	defer func() { _ = ptmx.Close(); _ = tty.Close() }()
	done := make(chan string)
	go func() {
		answer, _ := askSecret(genericiooptions.IOStreams{In: tty, Out: io.Discard, ErrOut: io.Discard}, "Token: ")
		done <- answer
	}()
	// Type once the terminal no longer echoes, as a person would after the question.
	for give := time.Now().Add(time.Minute); ; {
		if time.Now().After(give) {
			t.Fatal("the terminal still echoes what is typed while the token is asked for")
		}
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatal(err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := ptmx.Write([]byte("tok-secret-123\n")); err != nil {
		t.Fatal(err)
	}
	if got := <-done; got != "tok-secret-123" {
		t.Fatalf("askSecret = %q", got)
	}
	// What the terminal showed: echo is restored by now, so a marker written after the
	// answer ends the output to read.
	if _, err := ptmx.Write([]byte("END\n")); err != nil {
		t.Fatal(err)
	}
	var shown strings.Builder
	buf := make([]byte, 256)
	for !strings.Contains(shown.String(), "END") {
		n, err := ptmx.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		shown.Write(buf[:n])
	}
	if strings.Contains(shown.String(), "tok-secret") {
		t.Errorf("the terminal echoed the token: %q", shown.String())
	}

	got, ok := askSecret(genericiooptions.IOStreams{In: strings.NewReader(" piped-tok \n"), Out: io.Discard, ErrOut: io.Discard}, "Token: ")
	if !ok || got != "piped-tok" {
		t.Errorf("piped askSecret = %q, %v", got, ok)
	}
}

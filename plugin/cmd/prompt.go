package cmd

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericiooptions"
)

// ask puts question on stderr (so stdout stays the command's output) and reads one line
// of standard input, trimmed. ok is false when nothing could be read (end of input);
// the question's line is then ended so the shell prompt does not follow it.
func ask(streams genericiooptions.IOStreams, question string) (answer string, ok bool) {
	fmt.Fprint(streams.ErrOut, question)
	line, err := bufio.NewReader(streams.In).ReadString('\n')
	if err != nil && line == "" {
		fmt.Fprintln(streams.ErrOut)
		return "", false
	}
	return strings.TrimSpace(line), true
}

// askSecret is ask for a secret (a token): when standard input is a terminal the answer
// is read without echo, so it never shows on the screen or in a screen recording; piped
// input is read as ask does.
func askSecret(streams genericiooptions.IOStreams, question string) (answer string, ok bool) {
	f, isFile := streams.In.(*os.File)
	if !isFile || !term.IsTerminal(int(f.Fd())) {
		return ask(streams, question)
	}
	fmt.Fprint(streams.ErrOut, question)
	b, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(streams.ErrOut) // the user's Enter was not echoed either
	if err != nil {
		return "", false
	}
	return strings.TrimSpace(string(b)), true
}

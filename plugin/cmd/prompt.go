package cmd

import (
	"bufio"
	"fmt"
	"strings"

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

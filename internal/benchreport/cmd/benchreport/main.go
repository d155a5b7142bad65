// Command benchreport prints the targets table of `make bench` from its results file:
//
//	benchreport [-machine TEXT] bench/results.txt
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cakeai/cake-agents/internal/benchreport"
)

func main() {
	machine := flag.String("machine", "", "the machine the results come from, printed in the title")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: benchreport [-machine TEXT] RESULTS")
		os.Exit(2)
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer f.Close()
	res, err := benchreport.Parse(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := benchreport.Write(os.Stdout, res, *machine); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

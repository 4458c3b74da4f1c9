// Command alternate times commands side by side: it runs them in turn, A B
// A B ..., so that both see the same machine (a shared machine's speed
// drifts over seconds, which skews tools that run all of A, then all of B),
// and prints each one's median wall time. Each run gets the same stdin.
//
//	alternate -n 40 -in t.jwe "tether decrypt" "clevis decrypt"
//
// A command is split on spaces (no quoting): a program and its arguments.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"time"
)

type result struct {
	Command  string  `json:"command"`
	MedianMS float64 `json:"median_ms"`
	MinMS    float64 `json:"min_ms"`
	Runs     int     `json:"runs"`
}

func main() {
	n := flag.Int("n", 40, "timed runs of each command")
	warm := flag.Int("w", 3, "untimed runs of each command first")
	in := flag.String("in", "", "file given to every run as stdin")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: alternate [-n N] [-w N] [-in FILE] COMMAND...")
		os.Exit(2)
	}
	times := make([][]time.Duration, flag.NArg())
	for i := 0; i < *warm+*n; i++ {
		for c, cmdline := range flag.Args() {
			d, err := run(cmdline, *in)
			if err != nil {
				fmt.Fprintf(os.Stderr, "alternate: %s: %v\n", cmdline, err)
				os.Exit(1)
			}
			if i >= *warm {
				times[c] = append(times[c], d)
			}
		}
	}
	var out []result
	for c, ts := range times {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
		med := ts[len(ts)/2]
		if len(ts)%2 == 0 {
			med = (ts[len(ts)/2-1] + ts[len(ts)/2]) / 2
		}
		out = append(out, result{Command: flag.Arg(c), MedianMS: ms(med), MinMS: ms(ts[0]), Runs: len(ts)})
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

// run runs cmdline once and returns its wall time; a failure is an error.
func run(cmdline, in string) (time.Duration, error) {
	f := strings.Fields(cmdline)
	cmd := exec.Command(f[0], f[1:]...)
	if in != "" {
		r, err := os.Open(in)
		if err != nil {
			return 0, err
		}
		defer r.Close()
		cmd.Stdin = r
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, stderr.String())
	}
	return d, nil
}

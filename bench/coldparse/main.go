// Command coldparse times, in a fresh process, what tether decrypt does
// with a tang JWE before it can connect: parse the compact JWE, read its
// pin and parse the tang pin's header. It prints the nanoseconds taken.
// Run it many times (bench/ab-coldparse.sh): only the first use in a
// process is measured, which is what a one-shot decrypt pays.
//
//	coldparse FILE.jwe
package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/pin/tang"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: coldparse FILE.jwe")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	s := strings.TrimSpace(string(data))
	t0 := time.Now()
	j, err := jose.ParseCompact(s)
	if err == nil {
		_, err = j.Header.Pin()
	}
	if err == nil {
		_, err = tang.Inspect(j)
	}
	d := time.Since(t0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(d.Nanoseconds())
}

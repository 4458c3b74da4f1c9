// Command p521 benchmarks jose/internal/p521 against OpenSSL's P-521 ECDH
// (`openssl speed ecdhp521`), filippo.io/nistec and crypto/ecdh, side by
// side, and prints the ratios.
//
// Each figure is the median of several rounds. Go rounds are timed both by
// wall clock and by the CPU time of the benchmarking thread
// (getrusage(RUSAGE_THREAD)); OpenSSL's default divisor is user CPU time,
// and `-elapsed` switches it to wall clock, so both columns compare like
// with like even on a loaded machine.
//
//	go run ./jose/internal/p521/bench [-seconds 3] [-rounds 5] [-openssl openssl]
package main

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"filippo.io/nistec"
	"github.com/tether-nbde/tether/jose/internal/p521"
)

var (
	seconds    = flag.Float64("seconds", 3, "duration of each round")
	rounds     = flag.Int("rounds", 5, "rounds per figure (the median is reported)")
	opensslBin = flag.String("openssl", "openssl", "openssl binary")
)

type rate struct{ cpu, wall float64 } // ops per second

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measure runs f repeatedly for one round and returns its rate.
func measure(f func()) rate {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	runtime.GC()
	d := time.Duration(*seconds * float64(time.Second))
	n := 0
	c0, w0 := threadCPU(), time.Now()
	for time.Since(w0) < d {
		for i := 0; i < 10; i++ {
			f()
		}
		n += 10
	}
	cpu, wall := threadCPU()-c0, time.Since(w0)
	return rate{float64(n) / cpu.Seconds(), float64(n) / wall.Seconds()}
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

var opensslLine = regexp.MustCompile(`521 bits ecdh \(nistp521\)\s+([0-9.]+)s\s+([0-9.]+)`)

func openssl(elapsed bool) (float64, error) {
	args := []string{"speed", "-seconds", strconv.Itoa(int(*seconds + 0.5))}
	if elapsed {
		args = append(args, "-elapsed")
	}
	args = append(args, "ecdhp521")
	out, err := exec.Command(*opensslBin, args...).CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%s %v: %v\n%s", *opensslBin, args, err, out)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if m := opensslLine.FindStringSubmatch(sc.Text()); m != nil {
			return strconv.ParseFloat(m[2], 64)
		}
	}
	return 0, fmt.Errorf("no ecdhp521 line in openssl output:\n%s", out)
}

func main() {
	flag.Parse()
	peer, _ := ecdh.P521().GenerateKey(rand.Reader)
	priv, _ := ecdh.P521().GenerateKey(rand.Reader)
	pub, sc := peer.PublicKey().Bytes(), priv.Bytes()
	np, _ := nistec.NewP521Point().SetBytes(pub)
	p521.ScalarBaseMult(sc) // build the fixed-base table

	type bench struct {
		name string
		f    func()
	}
	benches := []bench{
		{"p521.ScalarMult (variable base)", func() {
			if _, err := p521.ScalarMult(pub, sc); err != nil {
				panic(err)
			}
		}},
		{"p521.ScalarBaseMult (fixed base)", func() {
			if _, err := p521.ScalarBaseMult(sc); err != nil {
				panic(err)
			}
		}},
		{"nistec P521 ScalarMult", func() {
			r, _ := nistec.NewP521Point().ScalarMult(np, sc)
			r.Bytes()
		}},
		{"crypto/ecdh P-521 ECDH", func() {
			if _, err := priv.ECDH(peer.PublicKey()); err != nil {
				panic(err)
			}
		}},
	}

	fmt.Printf("P-521 scalar multiplication, %d rounds of %gs each, median ops/s per core\n", *rounds, *seconds)
	fmt.Printf("%s, %s/%s, GOMAXPROCS=%d, %d CPUs\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU())
	if v, err := exec.Command(*opensslBin, "version").Output(); err == nil {
		fmt.Printf("%s", v)
	}
	if la, err := os.ReadFile("/proc/loadavg"); err == nil {
		fmt.Printf("load average at start: %s", la)
	}

	// Interleave rounds of every benchmark and of OpenSSL so that load
	// changes on a shared machine hit all of them alike.
	cpu := make([][]float64, len(benches))
	wall := make([][]float64, len(benches))
	var osslCPU, osslWall []float64
	for r := 0; r < *rounds; r++ {
		for i, b := range benches {
			x := measure(b.f)
			cpu[i] = append(cpu[i], x.cpu)
			wall[i] = append(wall[i], x.wall)
		}
		c, err := openssl(false)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		w, err := openssl(true)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		osslCPU, osslWall = append(osslCPU, c), append(osslWall, w)
		fmt.Fprintf(os.Stderr, "round %d/%d: p521 %.0f/s cpu, openssl %.0f/s cpu\n", r+1, *rounds, x0(cpu[0]), c)
	}
	oc, ow := median(osslCPU), median(osslWall)
	fmt.Printf("\n%-36s %12s %12s %16s\n", "", "ops/s (cpu)", "ops/s (wall)", "OpenSSL/this (cpu)")
	fmt.Printf("%-36s %12.0f %12.0f %16s\n", "openssl speed ecdhp521 (derive)", oc, ow, "1.00")
	for i, b := range benches {
		c, w := median(cpu[i]), median(wall[i])
		fmt.Printf("%-36s %12.0f %12.0f %16.2f\n", b.name, c, w, oc/c)
	}
	c := median(cpu[0])
	fmt.Printf("\nvariable-base ScalarMult is %.2fx slower than OpenSSL ECDH by CPU time (%.2fx by wall clock); target ≤ 1.50x\n", oc/c, ow/median(wall[0]))
}

func x0(xs []float64) float64 { return xs[len(xs)-1] }

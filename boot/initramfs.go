package boot

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/jose"
	"github.com/tether-nbde/tether/luks"
)

// InitramfsConfigPath is where "tether install initramfs-tools|dracut"
// writes the boot settings, and where the initramfs reads them (the hook
// copies the file in).
const InitramfsConfigPath = "/etc/tether/initramfs.conf"

// DefaultInitramfsDeadline is how long the initramfs waits, network
// included, before cryptroot's prompt appears. Short, because tether keeps
// trying behind the prompt: the deadline only decides when a person may
// type.
const DefaultInitramfsDeadline = 30 * time.Second

// MaxRetryBackoff caps the wait between two attempts behind the prompt, so
// a server that comes back is used within about that long.
const MaxRetryBackoff = 30 * time.Second

// InitramfsConfig is what the initramfs scripts are told: from the config
// file, then the kernel command line (which wins).
type InitramfsConfig struct {
	Deadline time.Duration
	// Retry bounds the retries behind the prompt after the deadline:
	// negative is forever (the default), 0 is no retry.
	Retry time.Duration
	// IP is initramfs-tools' ip= (or dracut's) used when the kernel
	// command line has none.
	IP string
	// CmdlineIP is ip= from the kernel command line; it wins over IP.
	CmdlineIP string
	// Warnings are the settings that were ignored, each with why.
	Warnings []string
}

// DefaultInitramfsConfig is the configuration with no file and nothing on
// the command line.
func DefaultInitramfsConfig() InitramfsConfig {
	return InitramfsConfig{Deadline: DefaultInitramfsDeadline, Retry: -1}
}

// NetworkIP is the ip= setting the network is brought up with.
func (c InitramfsConfig) NetworkIP() string {
	if c.CmdlineIP != "" {
		return c.CmdlineIP
	}
	return c.IP
}

// ParseRetry reads tether.retry=: "forever" (or "yes"), "no" (or "0",
// "off"), or a duration.
func ParseRetry(s string) (time.Duration, error) {
	switch strings.ToLower(s) {
	case "forever", "yes", "on", "":
		return -1, nil
	case "no", "off", "0", "never":
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("retry %q: want forever, no or a duration such as 10m", s)
	}
	return d, nil
}

// ParseDeadline reads a deadline: a Go duration (30s, 2m) or plain seconds.
func ParseDeadline(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		var n int
		if _, e := fmt.Sscanf(s, "%d", &n); e == nil && fmt.Sprint(n) == s {
			d, err = time.Duration(n)*time.Second, nil
		}
	}
	if err != nil || d <= 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("deadline %q: want a duration such as 30s or 2m", s)
	}
	return d, nil
}

// FormatRetry is the inverse of ParseRetry.
func FormatRetry(d time.Duration) string {
	switch {
	case d < 0:
		return "forever"
	case d == 0:
		return "no"
	}
	return d.String()
}

// MarshalInitramfsConfig writes the config file's text.
func MarshalInitramfsConfig(c InitramfsConfig) []byte {
	var b strings.Builder
	b.WriteString("# Written by \"tether install\"; read (never sourced) by tether in the initramfs.\n")
	b.WriteString("# The kernel command line overrides: tether.deadline=, tether.retry=, ip=.\n")
	fmt.Fprintf(&b, "deadline=%s\n", c.Deadline)
	fmt.Fprintf(&b, "retry=%s\n", FormatRetry(c.Retry))
	if c.IP != "" {
		fmt.Fprintf(&b, "ip=%s\n", c.IP)
	}
	return []byte(b.String())
}

// ParseInitramfsConfig applies the config file's key=value lines to c.
// Nothing in it is fatal: a bad line is ignored with a warning, so a
// damaged file can never keep the boot from reaching the prompt.
func ParseInitramfsConfig(c *InitramfsConfig, data []byte) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			c.Warnings = append(c.Warnings, fmt.Sprintf("%s line %d: no '=' in %q; ignored", InitramfsConfigPath, n, line))
			continue
		}
		c.set("config line "+fmt.Sprint(n), strings.TrimSpace(k), strings.TrimSpace(v))
	}
}

func (c *InitramfsConfig) set(where, k, v string) {
	warn := func(err error) {
		c.Warnings = append(c.Warnings, fmt.Sprintf("%s: %v; ignored", where, err))
	}
	switch k {
	case "deadline", "tether.deadline":
		if d, err := ParseDeadline(v); err != nil {
			warn(err)
		} else {
			c.Deadline = d
		}
	case "retry", "tether.retry":
		if d, err := ParseRetry(v); err != nil {
			warn(err)
		} else {
			c.Retry = d
		}
	case "ip":
		if strings.ContainsAny(v, " \t\n'\"\\$`;") {
			warn(fmt.Errorf("ip %q has characters an ip= setting never has", v))
		} else {
			c.IP = v
		}
	default:
		warn(fmt.Errorf("unknown setting %q", k))
	}
}

// ParseKernelCmdline applies tether.deadline=, tether.retry= and ip= from
// /proc/cmdline's text to c.
func ParseKernelCmdline(c *InitramfsConfig, cmdline string) {
	for _, f := range strings.Fields(cmdline) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "tether.deadline", "tether.retry":
			c.set("kernel command line "+k, k, v)
		case "ip":
			c.CmdlineIP = v
		}
	}
}

// LoadInitramfsConfig reads the config file (missing is fine) and the
// kernel command line.
func LoadInitramfsConfig(file, cmdlineFile string) InitramfsConfig {
	c := DefaultInitramfsConfig()
	if data, err := os.ReadFile(file); err == nil {
		ParseInitramfsConfig(&c, data)
	} else if !errors.Is(err, os.ErrNotExist) {
		c.Warnings = append(c.Warnings, fmt.Sprintf("read %s: %v; using the defaults", file, err))
	}
	if data, err := os.ReadFile(cmdlineFile); err == nil {
		ParseKernelCmdline(&c, string(data))
	}
	return c
}

// networkPins are the pins that reach another machine. Anything not known
// to be local is assumed to need the network.
var localPins = map[string]bool{"tpm2": true, "sss": true, "null": true}

// NeedsNetwork reports whether any binding's policy tree has a pin that
// talks to another machine (tang, https, smb, managed, or one tether does
// not know).
func NeedsNetwork(bs []luks.Binding) bool {
	for _, b := range bs {
		if b.JWE != nil && jweNeedsNetwork(b.JWE, 0) {
			return true
		}
	}
	return false
}

func jweNeedsNetwork(j *jose.JWE, depth int) bool {
	name, err := j.Header.Pin()
	if err != nil || depth > 8 {
		return true
	}
	if name != "sss" {
		return !localPins[name]
	}
	var h struct {
		SSS struct {
			JWE []string `json:"jwe"`
		} `json:"sss"`
	}
	if err := json.Unmarshal(j.Header.Clevis, &h); err != nil {
		return true
	}
	for _, c := range h.SSS.JWE {
		cj, err := jose.ParseCompact(c)
		if err != nil || jweNeedsNetwork(cj, depth+1) {
			return true
		}
	}
	return false
}

// Console writes the boot's messages where an owner sees them: the console
// (Out) and the kernel log (Kmsg, /dev/kmsg), so "journalctl -b" shows them
// after the boot.
type Console struct {
	mu   sync.Mutex
	Out  io.Writer
	Kmsg io.Writer // nil: none
	// KernelEchoes means the kernel prints kernel-log warnings on the
	// console itself (no "quiet"). Its copy would come a moment later,
	// in the middle of cryptroot's prompt, so the line then goes to the
	// kernel log at debug priority, which the kernel keeps off the
	// console (the journal keeps it all the same).
	KernelEchoes bool
}

// Say prints one line that matters after the boot too: console and
// kernel log.
func (c *Console) Say(format string, a ...any) {
	line := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Out != nil {
		fmt.Fprintln(c.Out, line)
	}
	if c.Kmsg != nil {
		prio := 4 // warning
		if c.KernelEchoes {
			prio = 7
		}
		fmt.Fprintf(c.Kmsg, "<%d>%s\n", prio, line)
	}
}

// Note prints one line on the console only.
func (c *Console) Note(format string, a ...any) {
	line := strings.ReplaceAll(fmt.Sprintf(format, a...), "\n", " ")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.Out != nil {
		fmt.Fprintln(c.Out, line)
	}
}

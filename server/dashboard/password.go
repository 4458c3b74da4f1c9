package dashboard

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/tether-nbde/tether/server/internal/wire"
	"golang.org/x/crypto/argon2"
)

// Dashboard passwords are hashed with argon2id (RFC 9106), stored as PHC
// strings ("$argon2id$v=19$m=...,t=...,p=...$salt$hash") so that the cost
// can be raised later without invalidating existing accounts. The default
// is OWASP's recommendation (19 MiB, 2 passes, 1 lane): about 0.1 s on a
// small server, and every guess costs an attacker with the database the
// same memory.
var argonParams = struct {
	time, memory uint32
	threads      uint8
}{time: 2, memory: 19 * 1024, threads: 1}

// MinPasswordLength is the shortest dashboard password accepted.
const MinPasswordLength = 10

// HashPassword returns the argon2id PHC string of password.
func HashPassword(password string) (string, error) {
	if len(password) < MinPasswordLength {
		return "", fmt.Errorf("password is shorter than %d characters", MinPasswordLength)
	}
	if len(password) > 1024 {
		return "", errors.New("password is longer than 1024 bytes")
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	p := argonParams
	key := argon2.IDKey([]byte(password), salt, p.time, p.memory, p.threads, 32)
	b64 := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.memory, p.time, p.threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// VerifyPassword reports whether password matches the PHC string hash.
// A malformed hash never matches.
func VerifyPassword(hash, password string) bool {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	// Refuse parameters that would let a tampered row exhaust memory or time.
	if m < 8*1024 || m > 1024*1024 || t < 1 || t > 16 || p < 1 || p > 16 {
		return false
	}
	b64 := base64.RawStdEncoding
	salt, err1 := b64.DecodeString(parts[4])
	want, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(want) < 16 || len(want) > 64 {
		return false
	}
	if len(password) > 1024 {
		return false
	}
	got := argon2.IDKey([]byte(password), salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is verified against when an account does not exist, so that a
// wrong name takes as long as a wrong password (no account enumeration).
var dummyHash = sync.OnceValue(func() string {
	h, _ := HashPassword(wire.RandomToken(16))
	return h
})

// loginLimiter brakes password guessing. An attempt is reserved before
// the password is verified (a burst of concurrent guesses checks no more
// than the limit) and given back if it succeeds, so only failures count.
//
//   - per source address (IPv6: per /64): 20 failures, then one per 10 s;
//   - per account and address: 5 failures, then one per minute;
//   - per account, from everywhere: after 10 failures each further check
//     from an address that has not signed in to the account before waits
//     a delay that doubles per failure, from 1 s up to one minute.
//
// A stranger thus brakes their own address first; the account-wide brake
// only slows a guesser spread over many addresses, never locks the owner
// out for long, spares the addresses the owner signed in from, and an
// administrator can clear it (tether admin user unlock). The table is
// bounded: entries that have recovered are evicted, never one that still
// brakes; when it is full of those, new senders are refused for a while.
//
// It lives in each replica's memory (like the unlock rate limit): with N
// replicas a guesser gets at most N times the rate.
type loginLimiter struct {
	mu      sync.Mutex
	buckets map[string]*loginBucket
	known   map[string]map[string]time.Time // account → address → last sign-in
	max     int                             // table size; 0 = maxLoginEntries
	swept   time.Time                       // last sweep of a full table
}

type loginBucket struct {
	kind   string
	tokens float64
	last   time.Time
	next   time.Time // account brake: no check before this
}

const (
	maxLoginEntries = 100000
	accountFree     = 10 // account-wide failures before the brake
	accountMaxDelay = time.Minute
	knownFor        = 30 * 24 * time.Hour
	maxKnownPerUser = 16
)

// Bucket sizes and refill periods. The account bucket's tokens count
// failures that did not decay yet (one per account refill period).
var loginLimits = map[string]struct {
	burst float64
	every time.Duration
}{
	"addr":    {20, 10 * time.Second},
	"pair":    {5, time.Minute},
	"account": {accountFree, 10 * time.Minute},
}

// refill brings b up to now and reports whether it is back to its
// untouched state (evictable).
func (b *loginBucket) refill(now time.Time) bool {
	lim := loginLimits[b.kind]
	if now.After(b.last) {
		b.tokens = min(lim.burst, b.tokens+float64(now.Sub(b.last))/float64(lim.every))
		b.last = now
	}
	return b.tokens >= lim.burst && !now.Before(b.next)
}

// find returns the bucket brought up to now, or nil if there is none
// (an untouched bucket: full, no brake).
func (l *loginLimiter) find(kind, key string, now time.Time) *loginBucket {
	b := l.buckets[kind+"\x00"+key]
	if b != nil {
		b.refill(now)
	}
	return b
}

// add creates a full bucket if there is room. nil means the table is
// full of entries that still brake: they are never dropped to make room.
func (l *loginLimiter) add(kind, key string, now time.Time) *loginBucket {
	if l.buckets == nil {
		l.buckets = map[string]*loginBucket{}
	}
	limit := l.max
	if limit == 0 {
		limit = maxLoginEntries
	}
	if len(l.buckets) >= limit {
		// A sweep walks the whole table: at most one a second, so that a
		// table full of live brakes does not cost a walk per request.
		if now.Sub(l.swept) < time.Second && !now.Before(l.swept) {
			return nil
		}
		l.swept = now
		for k, b := range l.buckets {
			if b.refill(now) {
				delete(l.buckets, k)
			}
		}
		if len(l.buckets) >= limit {
			return nil
		}
	}
	b := &loginBucket{kind: kind, tokens: loginLimits[kind].burst, last: now}
	l.buckets[kind+"\x00"+key] = b
	return b
}

// untouched stands in for a bucket that does not exist.
func untouched(kind string) *loginBucket {
	return &loginBucket{kind: kind, tokens: loginLimits[kind].burst}
}

// accountDelay is the brake after n account-wide failures.
func accountDelay(n float64) time.Duration {
	over := int(n) - accountFree
	if over < 0 {
		return 0
	}
	if over > 6 {
		return accountMaxDelay
	}
	return min(accountMaxDelay, time.Second<<over)
}

// reserve takes one attempt for user from addr, before the password is
// verified. If it returns ok, the caller must call done with the outcome.
// Otherwise wait says when to try again.
func (l *loginLimiter) reserve(user, addr string, now time.Time) (ok bool, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = wire.AddrKey(addr)
	// Everything is checked before any entry is made: a refused request
	// leaves nothing behind, so refusals cannot fill the table.
	ab, pb, acct := l.find("addr", addr, now), l.find("pair", user+"\x00"+addr, now), l.find("account", user, now)
	check := func(b *loginBucket, kind string) *loginBucket {
		if b == nil {
			return untouched(kind)
		}
		if b.tokens < 1 {
			wait = max(wait, time.Duration((1-b.tokens)*float64(loginLimits[kind].every)))
		}
		return b
	}
	check(ab, "addr")
	check(pb, "pair")
	seen, known := l.known[user][addr]
	known = known && now.Sub(seen) < knownFor
	failures := 0.0
	if acct != nil {
		failures = loginLimits["account"].burst - acct.tokens
	}
	braked := !known && failures >= accountFree
	if braked && now.Before(acct.next) {
		wait = max(wait, acct.next.Sub(now))
	}
	if wait > 0 {
		return false, wait
	}
	if ab == nil {
		ab = l.add("addr", addr, now)
	}
	if pb == nil && ab != nil {
		pb = l.add("pair", user+"\x00"+addr, now)
	}
	if ab == nil || pb == nil {
		// Full of entries that still brake: refuse newcomers rather than
		// forget anyone's limit.
		return false, time.Minute
	}
	ab.tokens--
	pb.tokens--
	if braked {
		acct.next = now.Add(accountDelay(failures + 1))
	}
	return true, 0
}

// done settles a reserved attempt: a success gives the attempt back and
// remembers the address for the account; a failure counts against it.
func (l *loginLimiter) done(user, addr string, good bool, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	addr = wire.AddrKey(addr)
	if !good {
		acct := l.find("account", user, now)
		if acct == nil {
			acct = l.add("account", user, now)
		}
		if acct != nil {
			acct.tokens--
		}
		return
	}
	l.refund(user, addr)
	if l.known == nil {
		l.known = map[string]map[string]time.Time{}
	}
	m := l.known[user]
	if m == nil {
		m = map[string]time.Time{}
		l.known[user] = m
	}
	m[addr] = now
	for len(m) > maxKnownPerUser {
		oldest := addr
		for a, t := range m {
			if t.Before(m[oldest]) {
				oldest = a
			}
		}
		delete(m, oldest)
	}
}

// release gives back an attempt that was reserved but never checked.
func (l *loginLimiter) release(user, addr string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refund(user, wire.AddrKey(addr))
}

func (l *loginLimiter) refund(user, addr string) {
	for _, k := range []string{"addr\x00" + addr, "pair\x00" + user + "\x00" + addr} {
		if b := l.buckets[k]; b != nil {
			b.tokens = min(loginLimits[b.kind].burst, b.tokens+1)
		}
	}
}

// clear forgets every brake on the account user (tether admin user
// unlock): its account-wide delay and its per-address limits.
func (l *loginLimiter) clear(user string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for k := range l.buckets {
		kind, rest, _ := strings.Cut(k, "\x00")
		if (kind == "account" && rest == user) || (kind == "pair" && strings.HasPrefix(rest, user+"\x00")) {
			delete(l.buckets, k)
			n++
		}
	}
	return n
}

package server

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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
	h, _ := HashPassword(randomToken(16))
	return h
})

// loginLimiter brakes password guessing: token buckets per account and
// per source address that only failures drain. It lives in each replica's
// memory (like the unlock rate limit): with N replicas a guesser gets at
// most N times the rate.
type loginLimiter struct {
	mu      sync.Mutex
	buckets map[string]*loginBucket
}

type loginBucket struct {
	tokens float64
	last   time.Time
}

// Limits: an account takes 5 failures at once, then one per minute; an
// address 20 at once, then one per 10 s.
var loginLimits = map[string]struct {
	burst float64
	every time.Duration
}{
	"user": {5, time.Minute},
	"addr": {20, 10 * time.Second},
}

func (l *loginLimiter) bucket(kind, key string, now time.Time) *loginBucket {
	lim := loginLimits[kind]
	k := kind + "\x00" + key
	b := l.buckets[k]
	if b == nil {
		if l.buckets == nil {
			l.buckets = map[string]*loginBucket{}
		}
		if len(l.buckets) > 100000 {
			// Bounded memory: forget everyone (full buckets again) rather
			// than grow without limit under a spray of addresses.
			clear(l.buckets)
		}
		b = &loginBucket{tokens: lim.burst, last: now}
		l.buckets[k] = b
	}
	b.tokens = min(lim.burst, b.tokens+float64(now.Sub(b.last))/float64(lim.every))
	b.last = now
	return b
}

// allow reports whether a sign-in attempt for user from addr may be
// checked now, and if not, when to try again.
func (l *loginLimiter) allow(user, addr string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var wait time.Duration
	for _, kb := range [][2]string{{"user", user}, {"addr", addr}} {
		b := l.bucket(kb[0], kb[1], now)
		if b.tokens < 1 {
			d := time.Duration((1 - b.tokens) * float64(loginLimits[kb[0]].every))
			wait = max(wait, d)
		}
	}
	return wait == 0, wait
}

// fail drains one token from the account's and the address's buckets.
func (l *loginLimiter) fail(user, addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, kb := range [][2]string{{"user", user}, {"addr", addr}} {
		l.bucket(kb[0], kb[1], now).tokens--
	}
}

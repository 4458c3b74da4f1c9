// Package luks binds LUKS2 volumes to pins, the way clevis luks does and
// wire compatible with it, and unlocks, rotates, creates and encrypts them.
//
// Every change to a volume goes through cryptsetup (Runner); tether never
// writes a header itself. Headers are read in pure Go (ReadHeader) for
// listings and for planning changes. Secrets reach cryptsetup only through
// stdin and pipes.
//
// Each mutation is a transaction that survives a crash at any point: a
// small "tether-txn" token records the intent in the header before
// anything else changes, and every command first finishes or rolls back
// what an interrupted one left (see Recover and docs/LUKS.md).
package luks

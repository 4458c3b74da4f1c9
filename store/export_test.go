package store

import "testing"

// RunSuite runs the Store test suite against stores made by open (for the
// external PostgreSQL test, which cannot import this package's internals).
func RunSuite(t *testing.T, open func(t *testing.T) Store) { testStore(t, open) }

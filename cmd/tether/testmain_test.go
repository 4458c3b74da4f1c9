package main

import (
	"testing"

	"github.com/tether-nbde/tether/internal/testenv"
)

// TestMain removes the binaries testenv.TetherBin builds, once the tests are done.
func TestMain(m *testing.M) { testenv.Main(m) }

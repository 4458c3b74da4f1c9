package connlimit

import "testing"

func TestConnBudget(t *testing.T) {
	for _, c := range []struct {
		limit        uint64
		managed      bool
		tang, managd int64
	}{
		{20000, true, 17276, 2468},
		{20000, false, 19744, 0},
		{1024, true, 672, 96},
		{100, true, 64, 64}, // a tiny limit still caps both
	} {
		b := Share(c.limit, c.managed)
		if b.Tang != c.tang || b.Managed != c.managd {
			t.Errorf("Share(%d, %v) = tang %d, managed %d; want %d, %d", c.limit, c.managed, b.Tang, b.Managed, c.tang, c.managd)
		}
		if c.limit > 1000 && uint64(b.Tang+b.Managed) > c.limit-Reserved {
			t.Errorf("Share(%d): the caps take the reserved descriptors", c.limit)
		}
	}
}

package cli

import "testing"

func TestUnitSafe(t *testing.T) {
	for in, want := range map[string]string{
		"sda2": "sda2", "nvme0n1p3": "nvme0n1p3", "data.img": "data.img", "a b:c": "a_b_c",
		"disk@by-id": "disk_by-id", "é": "_", "x\xffy": "x_y",
	} {
		if got := unitSafe(in); got != want {
			t.Errorf("unitSafe(%q) = %q, want %q", in, got, want)
		}
	}
}

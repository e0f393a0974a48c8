package main

import "testing"

func TestParseBytes(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{{"2GB", 2e9, true}, {"500mb", 5e8, true}, {"64KiB", 64 << 10, true}, {"1.5GiB", 3 << 29, true}, {"123", 123, true},
		{"", 0, false}, {"lots", 0, false}, {"-1MB", 0, false}} {
		got, err := parseBytes(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d (ok %v)", c.in, got, err, c.want, c.ok)
		}
	}
}

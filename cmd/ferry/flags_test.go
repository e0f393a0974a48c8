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

func TestParseHubOptions(t *testing.T) {
	for _, c := range []struct {
		js, profile string
		want        string // the options as JSON; "" for none, "error" for a refusal
	}{
		{"", "", "null"},
		{"", "gpu", `{"profile":"gpu"}`},
		{`{"image": "pytorch"}`, "", `{"image":"pytorch"}`},
		{`{"profile": "cpu", "n": 2}`, "gpu", `{"n":2,"profile":"gpu"}`},
		{`[1]`, "", "error"},
		{`null`, "", "error"},
		{`{"a":`, "", "error"},
	} {
		got, err := parseHubOptions(c.js, c.profile)
		s := toJSON(got)
		if err != nil {
			s = "error"
		}
		if s != c.want {
			t.Errorf("parseHubOptions(%q, %q) = %s (%v), want %s", c.js, c.profile, s, err, c.want)
		}
	}
}

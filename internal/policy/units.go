package policy

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseBandwidth reads a rate like "100Mbit", "1Gbit", "20mbit" or
// "50MB/s" and returns bytes per second.
func ParseBandwidth(s string) (float64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9 / 8}, {"mbit", 1e6 / 8}, {"kbit", 1e3 / 8}, {"bit", 1.0 / 8}, {"gb/s", 1e9}, {"mb/s", 1e6}, {"kb/s", 1e3}, {"b/s", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
			if err != nil || v <= 0 {
				break
			}
			return v * u.mult, nil
		}
	}
	return 0, fmt.Errorf("bandwidth %q: want a positive rate like 100Mbit, 1Gbit or 50MB/s", s)
}

// ParseSpeed reads "4x" or "4" as a speed factor.
func ParseSpeed(s string) (float64, error) {
	v, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(strings.ToLower(s)), "x"), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("speed %q: want a positive factor like 4x", s)
	}
	return v, nil
}

// ParseRTT reads a duration like "20ms".
func ParseRTT(s string) (float64, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("rtt %q: want a duration like 20ms", s)
	}
	return d.Seconds(), nil
}

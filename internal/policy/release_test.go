package policy

import (
	"math"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
)

// TestReleaseAfter: an idle cloud kernel goes after the configured time,
// but not before starting it again and bringing its values back would
// have cost as much.
func TestReleaseAfter(t *testing.T) {
	link := Link{Bandwidth: 1e6, RTT: 0.05, Compression: 1}
	for _, c := range []struct {
		name       string
		start      float64 // measured start of the cloud kernel, s
		only       int64
		configured time.Duration
		want       time.Duration
	}{
		{"never started: the configured time", 0, 0, 15 * time.Minute, 15 * time.Minute},
		{"start shorter than the configured time", 20, 10e6, 15 * time.Minute, 15 * time.Minute},
		{"start longer: wait it out", 20, 0, 10 * time.Second, 20 * time.Second},
		{"start plus values to bring back", 20, 10e6, 10 * time.Second, 30050 * time.Millisecond},
		{"absurd estimate is capped at a day", math.Inf(1), 0, time.Second, 24 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := NewModel(link)
			if c.start != 0 {
				m.ObserveStart(location.Remote, c.start)
			}
			if got := m.ReleaseAfter(location.Remote, c.configured, c.only); got != c.want {
				t.Fatalf("ReleaseAfter = %v, want %v", got, c.want)
			}
		})
	}
}

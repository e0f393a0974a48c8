package backend

import (
	"testing"
	"time"
)

func TestUpMeter(t *testing.T) {
	var m upMeter
	t0 := time.Unix(1000, 0)
	if got := m.seconds(t0); got != 0 {
		t.Fatalf("no kernel yet: %v s", got)
	}
	m.up(t0)
	m.up(t0.Add(5 * time.Second)) // a second start notice changes nothing
	if got := m.seconds(t0.Add(10 * time.Second)); got != 10 {
		t.Fatalf("running for 10 s: %v", got)
	}
	m.down(t0.Add(12 * time.Second))
	m.down(t0.Add(20 * time.Second)) // already down
	if got := m.seconds(t0.Add(100 * time.Second)); got != 12 {
		t.Fatalf("after it ended at 12 s: %v", got)
	}
	m.up(t0.Add(200 * time.Second))
	if got := m.seconds(t0.Add(203 * time.Second)); got != 15 {
		t.Fatalf("a second incarnation adds: %v", got)
	}
}

package backend

import (
	"sync"
	"time"
)

// upMeter adds up how long a backend's kernels existed, over all their
// incarnations: a cloud kernel costs money from its creation to its
// deletion, whether or not a cell runs (issue 18). Its methods may be
// called from any goroutine.
type upMeter struct {
	mu    sync.Mutex
	since time.Time     // when the kernel now existing was made (zero: none)
	total time.Duration // of the incarnations that ended
}

// up marks a kernel made at t (a second call before down is ignored).
func (m *upMeter) up(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.since.IsZero() {
		m.since = t
	}
}

// down marks the existing kernel ended at t.
func (m *upMeter) down(t time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.since.IsZero() {
		if t.After(m.since) {
			m.total += t.Sub(m.since)
		}
		m.since = time.Time{}
	}
}

// seconds is the kernels' time so far, the existing one counted to now.
func (m *upMeter) seconds(now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	d := m.total
	if !m.since.IsZero() && now.After(m.since) {
		d += now.Sub(m.since)
	}
	return d.Seconds()
}

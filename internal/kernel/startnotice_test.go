package kernel_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// TestSlowStartAnnounced: a cloud kernel that takes a while to start is
// announced in the cell's output (a notice, updates, the time it took),
// its start time reaches the cost model, and a cell on the running kernel
// says nothing of starts.
func TestSlowStartAnnounced(t *testing.T) {
	defer kernel.SetStartNotices(200*time.Millisecond, 300*time.Millisecond)()
	local, remote := backendtest.New(location.Local), backendtest.New(location.Remote, backendtest.WithStartDelay(1200*time.Millisecond))
	sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
	r := run(t, sess, "%%ferry remote\nprint(7)")
	if r.Status != "ok" || !strings.Contains(r.Text(), "7\n") {
		t.Fatalf("cloud cell: %s %q", r.Status, r.Text())
	}
	var stderr strings.Builder
	for _, o := range r.Outputs {
		if o["name"] == "stderr" {
			stderr.WriteString(o["text"].(string))
		}
	}
	got := stderr.String()
	for _, want := range []string{"Ferry: starting the cloud kernel…\n", "Ferry: still starting the cloud kernel (", "Ferry: the cloud kernel started in "} {
		if !strings.Contains(got, want) {
			t.Errorf("the cell's stderr lacks %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "still starting"); n > 4 {
		t.Errorf("%d updates in a 1.2 s start at one per 300 ms:\n%s", n, got)
	}
	if i, j := strings.Index(got, "starting the cloud"), strings.Index(got, "started in"); i > j {
		t.Errorf("announcements out of order:\n%s", got)
	}
	if s := sess.Kernel.StartSeconds(location.Remote); s < 1.2 || s > 10 {
		t.Errorf("the cost model's cloud start is %.2f s, want the 1.2 s measured", s)
	}
	if remote.Starts() != 1 {
		t.Errorf("%d cloud kernels started for one cell", remote.Starts())
	}
	r = run(t, sess, "%%ferry remote\nprint(8)")
	for _, o := range r.Outputs {
		if o["name"] == "stderr" && strings.Contains(o["text"].(string), "Ferry:") {
			t.Errorf("a cell on the running kernel announced: %q", o["text"])
		}
	}
}

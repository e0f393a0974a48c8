package report

import (
	"bytes"
	"html"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/trace"
)

func render(t *testing.T, s Summary, evs []trace.Event) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, s, evs); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

var (
	titleRE = regexp.MustCompile(`(?s)<title>(.*?)</title>`)
	tagRE   = regexp.MustCompile(`(?s)<style>.*?</style>|<[^>]+>`)
)

// visible is the text a user sees: the page's text and its tooltips.
func visible(page string) string {
	return html.UnescapeString(tagRE.ReplaceAllString(page, " "))
}

// tooltips are the timeline's hover texts.
func tooltips(page string) []string {
	var out []string
	for _, m := range titleRE.FindAllStringSubmatch(page, -1)[1:] { // [0] is the page's title
		out = append(out, html.UnescapeString(m[1]))
	}
	return out
}

func renderSample(t *testing.T) string {
	s, evs := sample()
	return render(t, s, evs)
}

func sample() (Summary, []trace.Event) {
	evs := []trace.Event{
		{Seq: 1, Cell: "id:a", Loc: "local", Runtime: 1, Status: "ok", Why: "pinned to local: it reads /etc/hosts, outside the notebook's folder, which only the laptop has"},
		{Seq: 2, Cell: "id:b", Loc: "remote", Runtime: 2, Think: 3, BytesMoved: 5 << 20, TransferSeconds: 0.5, Status: "ok",
			Moved: []string{"X", "__ferry_rng__", "__ferry_proc__", "__ferry_file__:data/x.csv"},
			Why:   "quickest there by Ferry's estimate of this cell: 69.00 s on the laptop, 12.00 s in the cloud; moving __ferry_rng__ to remote failed (<script>alert(1)</script>), ran at local"},
		// A transfer with nothing moved (a delete at the target) is no move.
		{Seq: 3, Cell: "id:c", Loc: "local", Runtime: 0.1, TransferSeconds: 0.2, Status: "error", Why: "--policy local runs every cell on the laptop"},
	}
	s := Summary{Title: "t.ipynb", Policy: "ferry", WallSeconds: 14.8, StartupSeconds: 2, BytesMoved: 5 << 20, CellsLocal: 2, CellsRemote: 1, Errors: 1,
		Cells: []Cell{
			{Name: "cell 1 of 3", Line: "import os", Wall: 1.5},
			{Name: "cell 2 of 3", Line: "model.fit(X)", Wall: 2.6},
			{Name: "cell 3 of 3", Line: "1/0", Wall: 0.4, Error: "ZeroDivisionError: division by zero"},
		}}
	return s, evs
}

func TestWriteShowsPlacementsTransfersAndEscapes(t *testing.T) {
	out := renderSample(t)
	for _, want := range []string{`class="remote"`, `class="xfer"`, `class="think"`, `class="local err"`, "5.0 MiB",
		"Moved X, random state, process settings, data/x.csv (5.0 MiB) to the cloud in 0.50 s before cell 2 of 3.", "&lt;script&gt;"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "<script>alert") {
		t.Error("report does not escape the reason text")
	}
}

// The timeline spans the wall time: start-up first, Ferry's own work in
// each cell, and what is left at the end.
func TestTimelineSpansTheWallTime(t *testing.T) {
	out := renderSample(t)
	if !strings.Contains(out, "Starting Ferry and its kernels took 2.00 s before the first cell.") {
		t.Error("the timeline does not show the start-up")
	}
	if !strings.Contains(out, "Ferry&#39;s own work for cell 2 of 3 took 0.10 s") {
		t.Error("the timeline does not show Ferry's own work within a cell (2.6 s seen, 2.5 s moving and running)")
	}
	ticks := regexp.MustCompile(`text-anchor="middle">([0-9.]+)s<`).FindAllStringSubmatch(out, -1)
	if len(ticks) == 0 || ticks[len(ticks)-1][1] != "14.8" {
		t.Errorf("the time axis ends at %v; want the wall time, 14.8 s", ticks)
	}
	// The last bar ends where the axis does.
	bars := regexp.MustCompile(`<rect class="[^"]*" x="([0-9.]+)" y="[0-9.]+" width="([0-9.]+)"`).FindAllStringSubmatch(out, -1)
	last := bars[len(bars)-1]
	x, _ := strconv.ParseFloat(last[1], 64)
	w, _ := strconv.ParseFloat(last[2], 64)
	if end := x + w; end < 989 || end > 991 {
		t.Errorf("the last bar ends at x=%.1f; want the axis' end, 990", end)
	}
}

// A cell that raised is highlighted in the table and on the timeline,
// and named with its error.
func TestErrorsAreHighlightedAndNamed(t *testing.T) {
	out := renderSample(t)
	row := regexp.MustCompile(`<tr class="local err">.*</tr>`).FindString(out)
	if row == "" {
		t.Fatal("no highlighted error row")
	}
	for _, want := range []string{"cell 3 of 3", "<code>1/0</code>", "raised ZeroDivisionError: division by zero"} {
		if !strings.Contains(html.UnescapeString(row), want) {
			t.Errorf("the error row %s lacks %q", row, want)
		}
	}
	if !strings.Contains(out, "tr.err td{background:") {
		t.Error("error rows have no highlight style")
	}
	found := false
	for _, tt := range tooltips(out) {
		found = found || strings.HasPrefix(tt, "Cell 3 of 3 `1/0` ran on the laptop for 0.10 s and raised ZeroDivisionError: division by zero.")
	}
	if !found {
		t.Errorf("no tooltip names the error: %q", tooltips(out))
	}
}

// What users see says laptop and cloud, names no internal state, and
// every tooltip and reason is a sentence; a transfer that moved nothing
// is not shown as a move.
func TestUserWords(t *testing.T) {
	out := renderSample(t)
	// Flag values are the user's own words (--policy local).
	text := regexp.MustCompile(`--policy \w+`).ReplaceAllString(visible(out), "--policy P")
	if m := regexp.MustCompile(`\b(local|remote)\b`).FindAllString(text, -1); len(m) > 0 {
		t.Errorf("the report shows %q to users; want laptop and cloud:\n%s", m, text)
	}
	if strings.Contains(text, "__ferry") {
		t.Errorf("the report shows Ferry's internal names:\n%s", text)
	}
	for _, tt := range tooltips(out) {
		if strings.Contains(tt, "0 B") || strings.HasSuffix(tt, ": ") {
			t.Errorf("tooltip %q shows an empty move", tt)
		}
		if !strings.HasSuffix(tt, ".") || strings.ToUpper(tt[:1]) != tt[:1] {
			t.Errorf("tooltip %q is not a sentence", tt)
		}
	}
	if n := strings.Count(out, `class="xfer"`); n != 1 {
		t.Errorf("%d transfer bars; want 1 (the third cell moved nothing)", n)
	}
	for _, want := range []string{
		"Pinned to the laptop: it reads /etc/hosts, outside the notebook's folder, which only the laptop has.",
		"Quickest there by Ferry's estimate of this cell: 69.00 s on the laptop, 12.00 s in the cloud; moving random state to the cloud failed",
		"cells on the laptop / in the cloud", "<td class=\"where\">cloud</td>",
	} {
		if !strings.Contains(html.UnescapeString(out), want) {
			t.Errorf("report lacks %q", want)
		}
	}
}

func TestReason(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", ""},
		{"pingpong alternates", "Pingpong alternates."},
		{"pinned to remote by %%ferry remote", "Pinned to the cloud by %%ferry remote."},
		{"--policy local runs every cell on the laptop", "--policy local runs every cell on the laptop."},
		{"moved __ferry_file__:data/a.csv, __ferry_rng__", "Moved data/a.csv, random state."},
	} {
		if got := Reason(c.in); got != c.want {
			t.Errorf("Reason(%q) = %q; want %q", c.in, got, c.want)
		}
	}
}

// TestCloudCostShown: the report shows the cloud kernels' time, idle
// releases and think-time moves from the trace, and the cost only when a
// price was given.
func TestCloudCostShown(t *testing.T) {
	s, evs := sample()
	evs[1].IdleBytes, evs[2].Released = 3<<20, []location.Location{location.Remote}
	tests := []struct {
		name       string
		secs, cost float64
		price      float64
		want, not  []string
	}{
		{"priced", 120, 0.0827, 2.48, []string{"120.0 s cloud kernel time (1 idle released)", "$0.0827 cloud cost at $2.48/h", "3.0 MiB moved in think time"}, nil},
		{"no price", 120, 0, 0, []string{"120.0 s cloud kernel time"}, []string{"cloud cost"}},
		{"no cloud", 0, 0, 0, nil, []string{"cloud kernel time", "cloud cost"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.CloudKernelSeconds, s.CloudCost, s.CloudPrice = tt.secs, tt.cost, tt.price
			text := strings.Join(strings.Fields(visible(render(t, s, evs))), " ")
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("report lacks %q", w)
				}
			}
			for _, w := range tt.not {
				if strings.Contains(text, w) {
					t.Errorf("report shows %q", w)
				}
			}
		})
	}
}

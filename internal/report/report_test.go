package report

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/trace"
)

func TestWriteShowsPlacementsTransfersAndEscapes(t *testing.T) {
	evs := []trace.Event{
		{Seq: 1, Cell: "aaaa", Loc: "local", Runtime: 1, Status: "ok", Why: "policy local"},
		{Seq: 2, Cell: "bbbb", Loc: "remote", Runtime: 2, Think: 3, BytesMoved: 5 << 20, TransferSeconds: 0.5, Moved: []string{"X"}, Status: "ok", Why: "<script>alert(1)</script>"},
		{Seq: 3, Cell: "cccc", Loc: "local", Runtime: 0.1, Status: "error"},
	}
	var b bytes.Buffer
	if err := Write(&b, Summary{Title: "t.ipynb", Policy: "ferry", BytesMoved: 5 << 20, CellsLocal: 2, CellsRemote: 1, Errors: 1}, evs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{`class="remote"`, `class="xfer"`, `class="think"`, `class="local err"`, "5.0 MiB", "moved 5.0 MiB to remote in 0.50s: X", "&lt;script&gt;"} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(out, "<script>alert") {
		t.Error("report does not escape the reason text")
	}
}

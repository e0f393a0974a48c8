package faults

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
)

// TestFaults runs every fault case against real kernels and a real
// jupyter-server; FERRY_FAULTS=substring runs some.
func TestFaults(t *testing.T) {
	testenv.SkipIfShort(t, "15 faults against real kernels and a jupyter-server, 4 min")
	testenv.RequireJupyterServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rs, err := Run(ctx, Options{Python: testenv.Python(), Only: os.Getenv("FERRY_FAULTS"), Log: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		t.Fatal("no case ran")
	}
	t.Logf("\n%s", Markdown(rs))
	for _, r := range rs {
		if !r.Survived {
			t.Errorf("%s: did not survive: lost %d of %d values: %s", r.Case, r.Lost, r.Checked, r.Note)
		}
		if r.Checked == 0 && r.Case != "restart during a transfer" {
			t.Errorf("%s: checked no value", r.Case)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(string(p))
	return len(p), nil
}

package main

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ferry-nb/ferry/internal/analysis"
	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/notebook"
	"github.com/ferry-nb/ferry/internal/report"
	"github.com/ferry-nb/ferry/internal/trace"
)

//go:embed demo/demo.ipynb
var demoNotebook []byte

func runDemo(ctx context.Context, args []string) error {
	fs := newFlags("demo")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel and jupyter-server")
	out := fs.String("o", "", "also write the executed demo notebook here")
	if err := parse(fs, args); err != nil {
		return err
	}
	nb, err := notebook.Parse(demoNotebook)
	if err != nil {
		return fmt.Errorf("bundled demo notebook: %w", err)
	}
	fmt.Println("Ferry demo: starting a local jupyter-server as the stand-in cloud …")
	srv, err := backend.StartJupyterServer(ctx, *python, 0)
	if err != nil {
		return err
	}
	defer srv.Stop()
	remote, err := backend.NewRemote(backend.RemoteConfig{URL: srv.URL, Token: srv.Token})
	if err != nil {
		return err
	}
	an := analysis.New(*python)
	defer an.Close()
	tr := trace.NewMemory()
	sess, err := client.StartFerry(ctx, kernel.Config{
		Backends: map[location.Location]backend.Backend{location.Local: backend.NewLocal(*python), location.Remote: remote},
		Policy:   "local", Analyzer: an, Trace: tr,
	})
	if err != nil {
		return err
	}
	fmt.Printf("cloud: %s (kernel on jupyter-server); laptop: ipykernel on %s\n\n", srv.URL, *python)
	t0 := time.Now()
	_, runErr := notebook.Run(ctx, nb, sess, notebook.RunOptions{})
	wall := time.Since(t0)
	closeErr := sess.Close(context.Background())

	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "cell\twhere\tseconds\tstate moved before it\toutput")
	evs := tr.Events()
	i := 0
	for n, c := range nb.Cells {
		if c.Type() != "code" || i >= len(evs) {
			continue
		}
		e := evs[i]
		i++
		moved := "-"
		if e.BytesMoved > 0 {
			moved = fmt.Sprintf("%s (%s)", report.HumanBytes(e.BytesMoved), strings.Join(e.Moved, ", "))
		}
		fmt.Fprintf(tw, "%d\t%s\t%.3f\t%s\t%s\n", n, e.Loc, e.Runtime+e.TransferSeconds, moved, firstOutput(c))
	}
	tw.Flush()
	var total int64
	for _, e := range evs {
		total += e.BytesMoved
	}
	fmt.Printf("\n%d cells in %.1fs; %s of state moved. raw_log (%s) never left the laptop: no cell in the cloud reads it.\n",
		len(evs), wall.Seconds(), report.HumanBytes(total), report.HumanBytes(5_000_000*8))
	if *out != "" {
		if err := nb.Write(*out); err != nil {
			return err
		}
	}
	if runErr != nil {
		return runErr
	}
	return closeErr
}

func firstOutput(c notebook.Cell) string {
	outs, _ := c["outputs"].([]any)
	for _, o := range outs {
		m, ok := o.(client.Output)
		if !ok {
			continue
		}
		lines, _ := m["text"].([]string)
		for _, l := range lines {
			// Ferry's own notes (a cloud kernel starting) are not the
			// cell's output.
			if !strings.HasPrefix(l, "Ferry: ") {
				return strings.TrimSpace(l)
			}
		}
	}
	return ""
}

package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/testbed"
)

// runTestbed sets up the emulated laptop/cloud pair, prints how to use it,
// and tears it down on Ctrl-C (or SIGTERM): one command for both.
func runTestbed(ctx context.Context, args []string) error {
	fs := newFlags("testbed")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with jupyter-server")
	rate := fs.String("rate", "100mbit", "link rate (tc tbf), e.g. 1gbit, 100mbit, 20mbit")
	rtt := fs.Duration("rtt", 20*time.Millisecond, "added round-trip time (user-space proxy)")
	cpu := fs.Float64("local-cpu", 0.25, "CPU share of one core for laptop kernels (cgroup v1 quota)")
	tokenFile := fs.String("token-file", filepath.Join(os.TempDir(), "ferry-testbed.token"), "where to write the cloud server's token (mode 0600)")
	if err := parse(fs, args); err != nil {
		return err
	}
	tb, err := testbed.Up(testbed.Config{Rate: *rate, RTT: *rtt, LocalCPU: *cpu})
	if err != nil {
		return err
	}
	defer tb.Down()
	for _, n := range tb.Notes {
		fmt.Println("testbed:", n)
	}
	srv, err := backend.StartJupyterServerIn(ctx, *python, tb.CloudIP(), tb.Prefix(), 0)
	if err != nil {
		return err
	}
	defer srv.Stop()
	proxy, err := testbed.NewLatencyProxy(strings.TrimPrefix(srv.URL, "http://"), *rtt)
	if err != nil {
		return err
	}
	defer proxy.Close()
	if err := os.WriteFile(*tokenFile, []byte(srv.Token), 0o600); err != nil {
		return err
	}
	defer os.Remove(*tokenFile)
	fmt.Printf("cloud: jupyter-server at http://%s (through %s of added latency)\n", proxy.Addr(), *rtt)
	fmt.Printf("use:   ferry run NB.ipynb --remote http://%s --token-file %s\n", proxy.Addr(), *tokenFile)
	if dir := tb.CgroupDir(); dir != "" {
		fmt.Printf("slow a laptop kernel: echo PID > %s/cgroup.procs\n", dir)
	}
	fmt.Println("Ctrl-C tears the test bed down.")
	<-ctx.Done()
	fmt.Println("testbed: tearing down")
	return nil
}

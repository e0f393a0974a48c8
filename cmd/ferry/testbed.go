package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
	n0 := len(tb.Notes)
	cloud, err := tb.StartCloud(ctx, *python)
	if err != nil {
		return err
	}
	defer cloud.Close()
	// What the cloud shares with this machine, and what it does not.
	for _, n := range tb.Notes[n0:] {
		fmt.Println("testbed:", n)
	}
	if err := os.WriteFile(*tokenFile, []byte(cloud.Server.Token), 0o600); err != nil {
		return err
	}
	defer os.Remove(*tokenFile)
	fmt.Printf("cloud: jupyter-server at %s (through %s of added latency)\n", cloud.URL(), *rtt)
	fmt.Printf("use:   ferry run NB.ipynb --remote %s --token-file %s\n", cloud.URL(), *tokenFile)
	if dir := tb.CgroupDir(); dir != "" {
		fmt.Printf("slow a laptop kernel: echo PID > %s/cgroup.procs\n", dir)
	}
	fmt.Println("Ctrl-C tears the test bed down.")
	<-ctx.Done()
	fmt.Println("testbed: tearing down")
	return nil
}

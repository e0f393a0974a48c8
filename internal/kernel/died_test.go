package kernel_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/client"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/location"
)

// A kernel killed while it runs a cell: the cell's error says so, and
// never that the cell did not run, even when Ferry did not hear the
// kernel's busy status for it (IOPub dropped it, or it was still queued
// when the death was noticed). Before, a missing busy status made Ferry
// say "died before this cell started, so the cell did not run" of a cell
// that had been running for a while.
func TestKernelDiedMidCellIsNotReportedAsNotRun(t *testing.T) {
	tests := []struct {
		name string
		opts []backendtest.Option
		want string
	}{
		{"busy status seen", nil, "died while running this cell"},
		{"busy status lost", []backendtest.Option{backendtest.WithLostBusy()}, "may have run partly"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			local, remote := backendtest.New(location.Local, tt.opts...), backendtest.New(location.Remote)
			sess := fakeSession(t, kernel.Config{Policy: "local"}, local, remote)
			run(t, sess, "x = 1")
			const cell = "sleep(5)"
			res := make(chan *client.Result, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				r, err := sess.Execute(ctx, cell, client.ExecOptions{})
				if err != nil {
					t.Error(err)
				}
				res <- r
			}()
			deadline := time.Now().Add(10 * time.Second)
			for local.Executed(cell) == 0 {
				if time.Now().After(deadline) {
					t.Fatal("the cell never reached the kernel")
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // well into the sleep
			local.Kill()
			var r *client.Result
			select {
			case r = <-res:
			case <-time.After(20 * time.Second):
				t.Fatal("the cell did not end after its kernel died")
			}
			if r == nil {
				t.Fatal("no result")
			}
			if r.Status != "error" || r.EName != "KernelDied" {
				t.Fatalf("cell ended %s %s: %s; want KernelDied", r.Status, r.EName, r.EValue)
			}
			if strings.Contains(r.EValue, "did not run") || !strings.Contains(r.EValue, tt.want) {
				t.Errorf("the error says %q; want %q and never that the cell did not run", r.EValue, tt.want)
			}
		})
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/kernel"
	"github.com/ferry-nb/ferry/internal/wire"
)

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 8 {
				return "ferry " + kernel.Version + " (" + s.Value[:8] + ")"
			}
		}
	}
	return "ferry " + kernel.Version
}

// backendFlags are the flags every command that runs cells shares.
type backendFlags struct {
	python string
	policy string
	seed   int64
}

func (b *backendFlags) register(fs interface {
	StringVar(*string, string, string, string)
	Int64Var(*int64, string, int64, string)
}) {
	fs.StringVar(&b.python, "python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel for the local kernel (env FERRY_PYTHON)")
	fs.StringVar(&b.policy, "policy", envOr("FERRY_POLICY", "local"), "placement policy: local, remote, pingpong, random (env FERRY_POLICY)")
	fs.Int64Var(&b.seed, "seed", 1, "seed for the random policy")
}

func (b *backendFlags) backends() (map[string]backend.Backend, error) {
	return map[string]backend.Backend{"local": backend.NewLocal(b.python)}, nil
}

func runKernel(ctx context.Context, args []string) error {
	fs := newFlags("kernel")
	file := fs.String("f", "", "connection file written by Jupyter")
	var bf backendFlags
	bf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *file == "" {
		return errors.New("missing -f CONNECTION_FILE; Jupyter passes it (run 'ferry install' and pick the \"Python 3 (Ferry)\" kernel)")
	}
	// Jupyter interrupts through interrupt_request; a Ctrl-C in the terminal
	// that started Jupyter must not kill the kernel.
	signal.Ignore(syscall.SIGINT)
	info, err := wire.LoadConnFile(*file)
	if err != nil {
		return err
	}
	bs, err := bf.backends()
	if err != nil {
		return err
	}
	srv, err := kernel.New(kernel.Config{Conn: info, Backends: bs, Policy: bf.policy, Seed: bf.seed})
	if err != nil {
		return fmt.Errorf("starting kernel on %s: %w", filepath.Base(*file), err)
	}
	err = srv.Serve(ctx)
	_ = os.Stdout.Sync()
	return err
}

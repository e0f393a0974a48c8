package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/bench"
)

// benches are the `ferry bench` subcommands.
var benches = []struct {
	name, usage string
	run         func(ctx context.Context, args []string) error
}{
	{"overhead", "trivial and 1 MB-output cells through Ferry vs straight to ipykernel", benchOverhead},
}

func runBench(ctx context.Context, args []string) error {
	if len(args) == 0 {
		var names []string
		for _, b := range benches {
			names = append(names, b.name)
		}
		return fmt.Errorf("name a benchmark: %s", strings.Join(names, ", "))
	}
	for _, b := range benches {
		if b.name == args[0] {
			return b.run(ctx, args[1:])
		}
	}
	return fmt.Errorf("unknown benchmark %q; run 'ferry bench' for the list", args[0])
}

func benchOverhead(ctx context.Context, args []string) error {
	fs := newFlags("bench overhead")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter with ipykernel")
	rounds := fs.Int("rounds", 200, "measured round trips per cell and side")
	if err := parse(fs, args); err != nil {
		return err
	}
	fmt.Printf("ferry bench overhead: %d interleaved rounds per cell\n", *rounds)
	_, err := bench.Overhead(ctx, *python, *rounds, os.Stdout)
	return err
}

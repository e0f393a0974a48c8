// Command ferry is a Jupyter kernel that runs each cell on the laptop or in
// the cloud. This file only parses arguments; the work is in internal/.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string) error
}

var commands = []command{
	{"kernel", "run as a Jupyter kernel (Jupyter starts this from the kernelspec)", runKernel},
	{"install", "write the \"Python 3 (Ferry)\" kernelspec", runInstall},
	{"run", "execute a notebook headless and write the executed notebook", runNotebook},
	{"bench", "measure Ferry against its baselines: overhead, state, hybrid", runBench},
	{"demo", "run a bundled notebook across this machine and a local jupyter-server standing in for the cloud", runDemo},
	{"testbed", "set up the emulated laptop/cloud test bed until Ctrl-C (netns + tc, latency proxy, CPU quota)", runTestbed},
	{"replay", "re-cost a recorded trace under every placement policy", runReplay},
	{"version", "print the version", func(context.Context, []string) error { fmt.Println(version()); return nil }},
}

// errUsage marks an error already explained by a flag set.
var errUsage = errors.New("usage")

func main() {
	level := slog.LevelWarn
	if os.Getenv("FERRY_DEBUG") != "" {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage(os.Stderr)
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	sigs := []os.Signal{syscall.SIGTERM, syscall.SIGHUP}
	if len(os.Args) > 1 && os.Args[1] != "kernel" {
		// Ctrl-C stops a command cleanly (the kernel ignores it: Jupyter
		// interrupts cells with interrupt_request).
		sigs = append(sigs, os.Interrupt)
	}
	ctx, stop := signal.NotifyContext(context.Background(), sigs...)
	defer stop()
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(ctx, os.Args[2:])
			if errors.Is(err, flag.ErrHelp) {
				return
			}
			if err != nil {
				if !errors.Is(err, errUsage) {
					fmt.Fprintln(os.Stderr, "ferry "+c.name+": "+err.Error())
				}
				stop()
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "ferry: unknown command %q\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(2)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ferry COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'ferry COMMAND -h' for a command's flags.")
}

// newFlags makes a flag set whose errors are one line.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+name, flag.ContinueOnError)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	return nil
}

func envOr(key, def string) string {
	if v := strings.TrimSpace(os.Getenv(key)); v != "" {
		return v
	}
	return def
}

// parseInterleaved parses flags given before and after positional
// arguments (ferry run NB.ipynb -o OUT), returning the positionals.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parse(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

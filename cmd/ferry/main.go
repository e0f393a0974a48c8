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

	"github.com/ferry-nb/ferry/internal/notebook"
)

type command struct {
	name  string
	usage string
	run   func(ctx context.Context, args []string) error
}

var commands []command

// init fills commands: help and completion read the list, so it cannot be
// a plain initialised variable (an initialisation cycle).
func init() {
	commands = []command{
		{"kernel", "run as a Jupyter kernel (Jupyter starts this from the kernelspec)", runKernel},
		{"install", "write the \"Python 3 (Ferry)\" kernelspec", runInstall},
		{"run", "execute a notebook headless and write the executed notebook", runNotebook},
		{"bench", "measure Ferry against its baselines: overhead, state, hybrid", runBench},
		{"demo", "run a bundled notebook across this machine and a local jupyter-server standing in for the cloud", runDemo},
		{"testbed", "set up the emulated laptop/cloud test bed until Ctrl-C (netns + tc, latency proxy, CPU quota)", runTestbed},
		{"replay", "re-cost a recorded trace under every placement policy", runReplay},
		{"version", "print the version (also ferry --version)", func(context.Context, []string) error { fmt.Println(version()); return nil }},
		{"help", "show the commands, or a command's flags: ferry help run", runHelp},
		{"completion", "print a shell completion script: ferry completion bash|zsh", runCompletion},
	}
}

// Exit codes, documented in 'ferry help run' and the README.
const (
	exitOK          = 0
	exitFailed      = 1   // the command failed (ferry run: a cell raised or timed out)
	exitUsage       = 2   // bad flags or arguments
	exitInterrupted = 130 // Ctrl-C (SIGINT), as shells report 128+2; SIGTERM and SIGHUP too, which stop a command the same way
)

// logLevel is the log's level; a command may quiet it (ferry run after
// Ctrl-C).
var logLevel = new(slog.LevelVar)

// quietAfter raises the log level to errors once ctx ends, unless
// FERRY_DEBUG is set: after Ctrl-C the kernel's warnings about the cell it
// was told to stop are expected, and the command's one line says what
// happened.
func quietAfter(ctx context.Context) {
	if os.Getenv("FERRY_DEBUG") != "" {
		return
	}
	context.AfterFunc(ctx, func() { logLevel.Set(slog.LevelError) })
}

// errUsage marks an error already explained by a flag set.
var errUsage = errors.New("usage")

// errBadUsage marks a usage error that still needs saying (wrap it: the
// message is printed, the exit code is exitUsage).
var errBadUsage = errors.New("usage")

// exitCode maps a command's error to the process's exit code.
func exitCode(err error) int {
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errUsage), errors.Is(err, errBadUsage):
		return exitUsage
	case errors.Is(err, notebook.ErrInterrupted):
		return exitInterrupted
	}
	return exitFailed
}

func main() {
	logLevel.Set(slog.LevelWarn)
	if os.Getenv("FERRY_DEBUG") != "" {
		logLevel.Set(slog.LevelDebug)
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel})))
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		usage(os.Stderr)
		if len(os.Args) < 2 {
			os.Exit(exitUsage)
		}
		return
	}
	if os.Args[1] == "--version" || os.Args[1] == "-version" {
		fmt.Println(version())
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
			if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) && !errors.Is(err, notebook.ErrInterrupted) {
				// Ctrl-C before or between cells: the same exit as during one.
				err = fmt.Errorf("%w: %w", notebook.ErrInterrupted, err)
			}
			if errors.Is(err, flag.ErrHelp) {
				return
			}
			if err != nil {
				if !errors.Is(err, errUsage) {
					fmt.Fprintln(os.Stderr, "ferry "+c.name+": "+strings.TrimPrefix(err.Error(), errBadUsage.Error()+": "))
				}
				stop()
				os.Exit(exitCode(err))
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "ferry: unknown command %q\n", os.Args[1])
	usage(os.Stderr)
	os.Exit(exitUsage)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: ferry COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.usage)
	}
	fmt.Fprintln(w, "\nRun 'ferry help COMMAND' (or 'ferry COMMAND -h') for a command's flags.")
}

// collected, while set, receives every flag set a command makes: help and
// completion learn a command's flags by running it with -h, so the flags
// are declared once, where they are used.
var collected map[string]*flag.FlagSet

// helpOut is where -h prints; 'ferry help CMD' sends it to stdout.
var helpOut io.Writer = os.Stderr

// newFlags makes a flag set whose errors are one line.
func newFlags(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("ferry "+name, flag.ContinueOnError)
	fs.SetOutput(helpOut)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: ferry %s [flags]\n", name)
		for _, c := range commands {
			if c.name == name {
				fmt.Fprintf(fs.Output(), "\n%s\n", c.usage)
			}
		}
		fmt.Fprintln(fs.Output(), "\nflags:")
		fs.PrintDefaults()
	}
	if collected != nil {
		fs.SetOutput(io.Discard)
		collected[name] = fs
	}
	return fs
}

// flagSets returns the flag sets of every command and bench subcommand,
// by name ("run", "bench hybrid").
func flagSets() map[string]*flag.FlagSet {
	collected = map[string]*flag.FlagSet{}
	defer func() { collected = nil }()
	ctx := context.Background()
	for _, c := range commands {
		switch c.name {
		case "help", "completion", "version":
			continue
		case "bench":
			for _, b := range benches {
				_ = b.run(ctx, []string{"-h"})
			}
			continue
		}
		_ = c.run(ctx, []string{"-h"})
	}
	return collected
}

// runHelp prints the command list, or one command's usage, to stdout.
func runHelp(ctx context.Context, args []string) error {
	if len(args) == 0 {
		usage(os.Stdout)
		return nil
	}
	name := strings.Join(args, " ")
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		if c.name == "help" || c.name == "version" || c.name == "completion" {
			fmt.Printf("ferry %s: %s\n", c.name, c.usage)
			return nil
		}
		if c.name == "bench" && len(args) == 1 {
			fmt.Println("usage: ferry bench NAME [flags]\n\nbenchmarks:")
			for _, b := range benches {
				fmt.Printf("  %-9s %s\n", b.name, b.usage)
			}
			return nil
		}
		helpOut = os.Stdout
		defer func() { helpOut = os.Stderr }()
		err := c.run(ctx, append(args[1:], "-h"))
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	return fmt.Errorf("%w: no command %q; run 'ferry help' for the list", errBadUsage, name)
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

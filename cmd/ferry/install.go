package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/policy"
)

func runInstall(ctx context.Context, args []string) error {
	fs := newFlags("install")
	user := fs.Bool("user", false, "install for this user (~/.local/share/jupyter/kernels)")
	prefix := fs.String("prefix", "", "install under DIR/share/jupyter/kernels (e.g. a virtualenv)")
	name := fs.String("name", "ferry", "kernelspec name")
	display := fs.String("display-name", "Python 3 (Ferry)", "name shown in the front end's kernel picker")
	python := fs.String("python", envOr("FERRY_PYTHON", backend.DefaultPython), "interpreter the local kernel runs on")
	pol := fs.String("policy", "", "placement policy the kernel starts with (default local)")
	remotes := newRemoteList("")
	fs.Var(remotes, "remote", "Jupyter Server or JupyterHub URL of the cloud kernel, or NAME=URL for one of several clouds (repeatable), written into the kernelspec (the token is not: set FERRY_TOKEN, FERRY_TOKEN_NAME or --token-file)")
	hubServer := fs.String("hub-server", "", "with a JupyterHub --remote: your named server to use, written into the kernelspec")
	hubProfile := fs.String("hub-profile", "", "with a JupyterHub --remote: the profile your server starts with, written into the kernelspec")
	hubOptions := fs.String("hub-options", "", "with a JupyterHub --remote: the spawner's user options (a JSON object), written into the kernelspec")
	tokenFile := fs.String("token-file", "", "token file the kernel reads at start, written into the kernelspec")
	cloudPrice := fs.String("cloud-price", "", "what a cloud kernel costs per hour in USD, written into the kernelspec")
	cloudIdle := fs.String("cloud-idle", "", "let an idle cloud kernel go after this long (e.g. 15m), written into the kernelspec")
	objective := fs.String("objective", "", "what --policy ferry minimises: time, balanced or cost, written into the kernelspec")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *user && *prefix != "" {
		return fmt.Errorf("--user and --prefix exclude each other; pick one")
	}
	// Refuse what would put a secret into kernel.json (any user who can
	// read the kernelspec, or ps while Jupyter runs it, would see it) or
	// start a kernel that cannot work.
	clouds, err := parseRemotes(remotes.specs)
	if err != nil {
		return err
	}
	for _, c := range clouds {
		if err := backend.CheckRemoteURL(c.URL); err != nil {
			return fmt.Errorf("--remote: %w", err)
		}
	}
	remote := len(clouds) > 0
	if _, err := parseHubOptions(*hubOptions, *hubProfile); err != nil {
		return err
	}
	if (*hubServer != "" || *hubOptions != "" || *hubProfile != "") && !remote {
		return fmt.Errorf("--hub-server, --hub-profile and --hub-options need --remote naming the JupyterHub")
	}
	if _, err := policy.New(*pol, 1); err != nil {
		return fmt.Errorf("--policy: %w", err)
	}
	locs := []location.Location{location.Local}
	for _, c := range clouds {
		locs = append(locs, c.Loc)
	}
	if _, _, err := perCloud("cloud-price", *cloudPrice, location.NewSet(locs...), nameByRemote, parseCloudPrice); err != nil {
		return err
	}
	if _, err := parseCloudIdle(*cloudIdle); err != nil {
		return err
	}
	if _, err := policy.ParseObjective(*objective); err != nil {
		return err
	}
	if _, err := os.Stat(*python); err != nil {
		return fmt.Errorf("interpreter %s not found; pass --python PATH to one with ipykernel (apt-get install python3-ipykernel)", *python)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("finding the ferry binary: %w", err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		return fmt.Errorf("finding the ferry binary: %w", err)
	}
	var root string
	switch {
	case *prefix != "":
		root = filepath.Join(*prefix, "share", "jupyter", "kernels")
	case *user || os.Geteuid() != 0:
		home, err := os.UserHomeDir()
		if err != nil {
			return fmt.Errorf("finding your home directory for --user: %w", err)
		}
		root = filepath.Join(home, ".local", "share", "jupyter", "kernels")
	default:
		root = "/usr/local/share/jupyter/kernels"
	}
	dir := filepath.Join(root, *name)
	argv := []string{exe, "kernel", "-f", "{connection_file}", "--python", *python}
	if *pol != "" {
		argv = append(argv, "--policy", *pol)
	}
	for _, r := range remotes.specs {
		argv = append(argv, "--remote", r)
	}
	for _, f := range []struct{ name, value string }{{"--hub-server", *hubServer}, {"--hub-profile", *hubProfile}, {"--hub-options", *hubOptions}} {
		if f.value != "" {
			argv = append(argv, f.name, f.value)
		}
	}
	if *cloudPrice != "" {
		argv = append(argv, "--cloud-price", *cloudPrice)
	}
	if *cloudIdle != "" {
		argv = append(argv, "--cloud-idle", *cloudIdle)
	}
	if *objective != "" {
		argv = append(argv, "--objective", *objective)
	}
	if *tokenFile != "" {
		abs, err := filepath.Abs(*tokenFile)
		if err != nil {
			return err
		}
		argv = append(argv, "--token-file", abs)
	}
	spec := map[string]any{
		"argv":           argv,
		"display_name":   *display,
		"language":       "python",
		"interrupt_mode": "message",
		"metadata":       map[string]any{"debugger": false, "ferry": map[string]string{"python": *python}},
	}
	b, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing kernelspec: %w", err)
	}
	fmt.Printf("installed kernelspec %q (%s) in %s\n", *name, *display, dir)
	if remote && !haveTokenSource(*tokenFile) {
		fmt.Fprintln(os.Stderr, "ferry install: warning: --remote is set but the kernel has no token to present: set FERRY_TOKEN where Jupyter runs, "+
			"pass --token-file FILE, or set token_file in Ferry's config file (ignore this if the server needs no token)")
	}
	return nil
}

// haveTokenSource reports whether a kernel started from the kernelspec
// will find a remote token: FERRY_TOKEN, a token file from the flag,
// FERRY_TOKEN_FILE or the config file. The token itself is never read
// here, nor written anywhere.
func haveTokenSource(tokenFile string) bool {
	return strings.TrimSpace(os.Getenv("FERRY_TOKEN")) != "" || tokenFile != "" ||
		strings.TrimSpace(os.Getenv("FERRY_TOKEN_FILE")) != "" || loadConfig().TokenFile != ""
}

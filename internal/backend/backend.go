// Package backend holds the places where cells run: a local ipykernel that
// Ferry starts and owns, and (see remote.go) a kernel on a Jupyter Server.
// Both have one lifecycle interface so the kernel package routes to either
// the same way.
package backend

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// Backend is one place cells can run: the lifecycle of one kernel, across
// its incarnations (a kernel that died is started again by the next
// Start). Modelled on jupyter_client's KernelProvisionerBase, each method
// says who calls it and when. Methods are safe for concurrent use.
type Backend interface {
	// Location is where this backend runs cells. Fixed for its lifetime.
	Location() location.Location
	// Start starts the kernel, or a new incarnation if the last one died.
	// It is a no-op on a running kernel and returns once the kernel
	// answers requests. Called by the kernel before anything is sent to
	// this location (the first cell, a move, recovery); concurrent calls
	// start one kernel.
	Start(ctx context.Context) error
	// Send sends a request on shell, control or stdin to the current
	// incarnation. Called by the kernel's request paths (forwarded and
	// hidden requests, relayed chunks); ctx bounds a write that blocks
	// (a slow link). It fails with ErrDied when no incarnation runs.
	Send(ctx context.Context, ch wire.Channel, m *wire.Message) error
	// Incoming delivers every message from the kernel, across
	// incarnations. Read by exactly one goroutine, the kernel's router.
	Incoming() <-chan wire.Incoming
	// Died is closed when the current incarnation has died; each Start
	// of a new incarnation returns a new channel. Read by whoever waits
	// on this kernel, so a death ends the wait.
	Died() <-chan struct{}
	// Alive reports whether an incarnation is running.
	Alive() bool
	// Interrupt interrupts the running cell. Called from the control
	// goroutine on the front end's interrupt_request.
	Interrupt(ctx context.Context) error
	// Shutdown stops the kernel in steps: shutdown_request, SIGTERM,
	// SIGKILL (or DELETE for a remote kernel). Called once, when Ferry
	// shuts down; Start is not called again after it.
	Shutdown(ctx context.Context) error
	// Status describes the backend for %ferry status. It never holds
	// secrets. Called at any time.
	Status() Status
	// KernelInfo is the kernel_info_reply content from the last start.
	KernelInfo() json.RawMessage
}

// Releaser is a backend whose kernel can be let go on purpose while Ferry
// runs: a metered cloud kernel after --cloud-idle of think time (issue 18).
// Release deletes the current incarnation; Died closes and the next Start
// starts a new one, as after a death, but LastExit and the state say it
// was released. Called only by the kernel's think time, on the shell
// worker (so no request is in flight to it), once every value only it
// held was written home and confirmed.
type Releaser interface {
	Release(ctx context.Context) error
}

// Status is what %ferry status shows about a backend.
type Status struct {
	Location    location.Location
	Kind        string
	Interpreter string
	PID         int
	URL         string
	KernelID    string
	State       string
	Started     time.Time
	Restarts    int
	LastExit    string
	// RTT is the round trip measured when the kernel started.
	RTT time.Duration
	// WorkDir is the kernel's working directory: a local path, or for a
	// remote kernel one relative to the server's root.
	WorkDir string
	// Starting is when the start under way began (zero when none is);
	// StartTook is how long the last successful start took. The kernel
	// announces a slow start and feeds the policy from them.
	Starting  time.Time
	StartTook time.Duration
	// Spawn is what a JupyterHub last said while it starts the user's
	// server for this start ("" when no server is being started).
	Spawn string
	// UpSeconds is how long this backend's kernels existed so far, over
	// all incarnations (a cloud kernel's from creation to deletion): what
	// a metered cloud bills.
	UpSeconds float64
	// Released is when the kernel was last let go after idle time (zero
	// if it was not, or a new one started since).
	Released time.Time
}

// ErrDied is returned when a kernel died while Ferry waited on it.
var ErrDied = errors.New("kernel died")

// Session is the session id Ferry uses towards its backends; replies carry
// it so they are never mistaken for the front end's.
var Session = wire.NewID()

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

	"github.com/ferry-nb/ferry/internal/wire"
)

// Backend is one place cells can run.
type Backend interface {
	// Location is "local" or "remote".
	Location() string
	// Start starts the kernel, or restarts it if it died. It is a no-op on
	// a running kernel and returns once the kernel answers requests.
	Start(ctx context.Context) error
	// Send sends a request on shell, control or stdin.
	Send(ch wire.Channel, m *wire.Message) error
	// Incoming delivers every message from the kernel, across restarts.
	Incoming() <-chan wire.Incoming
	// Died is closed when the current kernel incarnation has died.
	Died() <-chan struct{}
	// Alive reports whether the kernel is running.
	Alive() bool
	// Interrupt interrupts the running cell.
	Interrupt(ctx context.Context) error
	// Shutdown stops the kernel in steps: shutdown_request, SIGTERM,
	// SIGKILL (or DELETE for a remote kernel).
	Shutdown(ctx context.Context) error
	// Status describes the backend for %ferry status. It never holds secrets.
	Status() Status
	// KernelInfo is the kernel_info_reply content from the last start.
	KernelInfo() json.RawMessage
}

// Status is what %ferry status shows about a backend.
type Status struct {
	Location    string
	Kind        string
	Interpreter string
	PID         int
	URL         string
	KernelID    string
	State       string
	Started     time.Time
	Restarts    int
	LastExit    string
	RTT         time.Duration
	Throughput  float64 // bytes per second, 0 if unmeasured
}

// ErrDied is returned when a kernel died while Ferry waited on it.
var ErrDied = errors.New("kernel died")

// Session is the session id Ferry uses towards its backends; replies carry
// it so they are never mistaken for the front end's.
var Session = wire.NewID()

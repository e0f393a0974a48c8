package testbed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ferry-nb/ferry/internal/backend"
)

// Cloud is a jupyter-server inside the test bed's namespace (behind its
// rate-limited link), reached through a latency proxy adding the round trip.
type Cloud struct {
	Server *backend.JupyterServer
	// Separate is the server's machine of its own (user, mounts, HOME,
	// environment); nil when the machine could not give it one and the
	// cloud shares the laptop's disk (tb.Notes says so).
	Separate *Separate
	Proxy    *LatencyProxy
}

// StartCloud starts the cloud's jupyter-server with python and the proxy in
// front of it. Close stops both. With root it is a separate cloud (see
// Separate) in the test bed's namespace; otherwise it falls back to a
// server sharing the laptop's disk, user and environment, and says so in
// tb.Notes and the log.
func (tb *Testbed) StartCloud(ctx context.Context, python string) (*Cloud, error) {
	var sep *Separate
	var srv *backend.JupyterServer
	err := CheckSeparate()
	switch {
	case tb.NS == "":
		err = fmt.Errorf("%w: no network namespace", ErrNotSeparate)
	case err == nil:
		if sep, err = startSeparate(ctx, python, tb.NS, tb.NSIP, SeparateOptions{}); err != nil {
			return nil, err
		}
		srv = sep.JupyterServer
		tb.Notes = append(tb.Notes, sep.Notes...)
		for _, n := range sep.Notes {
			slog.Info("testbed: " + n)
		}
	}
	if sep == nil {
		if !errors.Is(err, ErrNotSeparate) {
			return nil, err
		}
		n := "the cloud is NOT a separate machine (" + err.Error() + "): it shares the laptop's disk, /tmp, user and environment"
		tb.Notes = append(tb.Notes, n)
		slog.Warn("testbed: " + n)
		if srv, err = backend.StartJupyterServerIn(ctx, python, tb.CloudIP(), tb.Prefix(), 0); err != nil {
			return nil, fmt.Errorf("starting the cloud's jupyter-server: %w", err)
		}
	}
	proxy, err := NewLatencyProxy(strings.TrimPrefix(srv.URL, "http://"), tb.cfg.RTT)
	if err != nil {
		if sep != nil {
			sep.Close()
		} else {
			srv.Stop()
		}
		return nil, err
	}
	return &Cloud{Server: srv, Separate: sep, Proxy: proxy}, nil
}

// URL is the cloud's address as the laptop sees it: the proxy's.
func (c *Cloud) URL() string { return "http://" + c.Proxy.Addr() }

// Close stops the proxy and the server (and removes the separate cloud's
// directories; the namespace is the test bed's, removed by Down).
func (c *Cloud) Close() {
	c.Proxy.Close()
	if c.Separate != nil {
		c.Separate.Close()
		return
	}
	c.Server.Stop()
}

package testbed

import (
	"context"
	"fmt"
	"strings"

	"github.com/ferry-nb/ferry/internal/backend"
)

// Cloud is a jupyter-server inside the test bed's namespace (behind its
// rate-limited link), reached through a latency proxy adding the round trip.
type Cloud struct {
	Server *backend.JupyterServer
	Proxy  *LatencyProxy
}

// StartCloud starts the cloud's jupyter-server with python and the proxy in
// front of it. Close stops both.
func (tb *Testbed) StartCloud(ctx context.Context, python string) (*Cloud, error) {
	srv, err := backend.StartJupyterServerIn(ctx, python, tb.CloudIP(), tb.Prefix(), 0)
	if err != nil {
		return nil, fmt.Errorf("starting the cloud's jupyter-server: %w", err)
	}
	proxy, err := NewLatencyProxy(strings.TrimPrefix(srv.URL, "http://"), tb.cfg.RTT)
	if err != nil {
		srv.Stop()
		return nil, err
	}
	return &Cloud{Server: srv, Proxy: proxy}, nil
}

// URL is the cloud's address as the laptop sees it: the proxy's.
func (c *Cloud) URL() string { return "http://" + c.Proxy.Addr() }

// Close stops the proxy and the server.
func (c *Cloud) Close() {
	c.Proxy.Close()
	c.Server.Stop()
}

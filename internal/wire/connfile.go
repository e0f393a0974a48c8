package wire

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
)

// ConnInfo is the content of a Jupyter connection file.
type ConnInfo struct {
	Transport       string `json:"transport"`
	IP              string `json:"ip"`
	ShellPort       int    `json:"shell_port"`
	IOPubPort       int    `json:"iopub_port"`
	StdinPort       int    `json:"stdin_port"`
	ControlPort     int    `json:"control_port"`
	HBPort          int    `json:"hb_port"`
	Key             string `json:"key"`
	SignatureScheme string `json:"signature_scheme"`
	KernelName      string `json:"kernel_name,omitempty"`
}

// String never shows the key.
func (c ConnInfo) String() string {
	return fmt.Sprintf("%s://%s shell=%d iopub=%d stdin=%d control=%d hb=%d", c.Transport, c.IP, c.ShellPort, c.IOPubPort, c.StdinPort, c.ControlPort, c.HBPort)
}

// LoadConnFile reads and validates a connection file. Errors name the file,
// the problem and the fix in one line.
func LoadConnFile(path string) (ConnInfo, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ConnInfo{}, fmt.Errorf("bad connection file: %w (start the kernel from Jupyter, or pass -f with an existing file)", err)
	}
	return ParseConnFile(b, path)
}

// ParseConnFile decodes and validates the content of the connection file
// called name. On error the ConnInfo is empty and the error, one line,
// names the file and the problem; it never shows the key.
func ParseConnFile(b []byte, name string) (ConnInfo, error) {
	var c ConnInfo
	if err := json.Unmarshal(b, &c); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			want := "a whole number"
			if te.Type.Kind() == reflect.String {
				want = "a string"
			}
			return ConnInfo{}, fmt.Errorf("bad connection file %s: %q must be %s, not a JSON %s; Jupyter writes it, do not edit it by hand", name, te.Field, want, te.Value)
		}
		return ConnInfo{}, fmt.Errorf("bad connection file %s: not valid JSON (%v); Jupyter writes it, do not edit it by hand", name, err)
	}
	if err := c.Validate(); err != nil {
		return ConnInfo{}, fmt.Errorf("bad connection file %s: %w", name, err)
	}
	return c, nil
}

// Validate checks that the connection info can be used.
func (c *ConnInfo) Validate() error {
	if c.Transport == "" {
		c.Transport = "tcp"
	}
	if c.SignatureScheme == "" {
		c.SignatureScheme = "hmac-sha256"
	}
	switch c.Transport {
	case "tcp":
		if c.IP == "" {
			return errors.New(`"ip" is missing; set it to 127.0.0.1`)
		}
		if net.ParseIP(c.IP) == nil && c.IP != "localhost" && c.IP != "*" {
			return fmt.Errorf(`"ip" %q is not an IP address; use e.g. 127.0.0.1`, c.IP)
		}
	case "ipc":
		if c.IP == "" {
			return errors.New(`"ip" (the ipc path prefix) is missing`)
		}
		if strings.ContainsRune(c.IP, 0) {
			return fmt.Errorf(`"ip" (the ipc path prefix) %q holds a NUL byte`, c.IP)
		}
	default:
		return fmt.Errorf(`transport %q is not supported; use "tcp" or "ipc"`, c.Transport)
	}
	ports := []struct {
		name string
		port int
	}{{"shell_port", c.ShellPort}, {"iopub_port", c.IOPubPort}, {"stdin_port", c.StdinPort}, {"control_port", c.ControlPort}, {"hb_port", c.HBPort}}
	for i, p := range ports {
		if p.port <= 0 || p.port > 65535 {
			return fmt.Errorf("%q is %d; each port must be between 1 and 65535", p.name, p.port)
		}
		for _, q := range ports[:i] {
			if q.port == p.port {
				return fmt.Errorf("%s and %s are both %d; each channel needs its own port", p.name, q.name, p.port)
			}
		}
	}
	if c.SignatureScheme != "hmac-sha256" {
		return fmt.Errorf("signature_scheme %q is not supported; use hmac-sha256", c.SignatureScheme)
	}
	if c.Key == "" {
		return errors.New(`"key" is empty, so messages would go unsigned and any local user could run code in this kernel; let Jupyter write the file (it always sets a key)`)
	}
	return nil
}

// Addr is the ZeroMQ endpoint for one of the ports.
func (c ConnInfo) Addr(port int) string {
	if c.Transport == "ipc" {
		return "ipc://" + c.IP + "-" + strconv.Itoa(port)
	}
	return "tcp://" + c.IP + ":" + strconv.Itoa(port)
}

// FreePorts returns n distinct free TCP ports on ip.
func FreePorts(ip string, n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port on %s: %w", ip, err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// NewLocalConnInfo makes connection info on free loopback ports with a fresh
// random key.
func NewLocalConnInfo() (ConnInfo, error) {
	p, err := FreePorts("127.0.0.1", 5)
	if err != nil {
		return ConnInfo{}, err
	}
	return ConnInfo{Transport: "tcp", IP: "127.0.0.1", ShellPort: p[0], IOPubPort: p[1], StdinPort: p[2], ControlPort: p[3], HBPort: p[4], Key: NewID(), SignatureScheme: "hmac-sha256"}, nil
}

// Write writes the connection info to path with owner-only permissions, as
// it holds the signing key.
func (c ConnInfo) Write(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

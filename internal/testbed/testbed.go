package testbed

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Config describes the emulated set-up.
type Config struct {
	// Rate is the link rate for tc, e.g. "100mbit"; "" leaves it unshaped.
	// It is the laptop's upload (laptop to cloud), and the download too
	// unless DownRate is set: a home link is often 20 Mbit up and 100
	// down.
	Rate     string
	DownRate string
	// RTT is added by the latency proxy.
	RTT time.Duration
	// LocalCPU is the laptop kernel's CPU share of one core (0.25 = a
	// quarter); 0 leaves it unthrottled.
	LocalCPU float64
}

// Testbed is a set-up made by Up; Down removes it.
type Testbed struct {
	cfg    Config
	id     string
	NS     string // network namespace holding the "cloud"
	HostIP string
	NSIP   string
	cgroup string
	// Notes says which mechanisms are in place and which fell back.
	Notes []string
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Up builds what the machine allows and says loudly what it could not.
func Up(cfg Config) (*Testbed, error) {
	tb := &Testbed{cfg: cfg, id: newID()}
	if err := tb.network(); err != nil {
		tb.Down()
		tb.Notes = append(tb.Notes, "no network namespace or tc ("+err.Error()+"): the link is NOT rate-limited")
		tb.NS = ""
	}
	if cfg.LocalCPU > 0 {
		if err := tb.cpu(); err != nil {
			tb.Notes = append(tb.Notes, "no cgroup v1 cpu controller ("+err.Error()+"): the laptop kernel is NOT slowed")
			tb.cgroup = ""
		}
	}
	for _, n := range tb.Notes {
		slog.Warn("testbed: " + n)
	}
	return tb, nil
}

// network makes the namespace, the veth pair and the tbf qdiscs. The /30
// lives only inside this machine, between the host and the namespace.
func (tb *Testbed) network() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("ip missing (apt-get install iproute2)")
	}
	tb.NS = "ferry-cloud-" + tb.id
	host, peer := "fh"+tb.id, "fc"+tb.id
	octet, _ := strconv.ParseUint(tb.id[:2], 16, 8)
	tb.HostIP = fmt.Sprintf("10.213.%d.1", octet)
	tb.NSIP = fmt.Sprintf("10.213.%d.2", octet)
	steps := [][]string{
		{"ip", "netns", "add", tb.NS},
		{"ip", "link", "add", host, "type", "veth", "peer", "name", peer},
		{"ip", "link", "set", peer, "netns", tb.NS},
		{"ip", "addr", "add", tb.HostIP + "/30", "dev", host},
		{"ip", "link", "set", host, "up"},
		{"ip", "netns", "exec", tb.NS, "ip", "addr", "add", tb.NSIP + "/30", "dev", peer},
		{"ip", "netns", "exec", tb.NS, "ip", "link", "set", peer, "up"},
		{"ip", "netns", "exec", tb.NS, "ip", "link", "set", "lo", "up"},
	}
	down := tb.cfg.DownRate
	if down == "" {
		down = tb.cfg.Rate
	}
	// tbf shapes what a device sends: the host's end carries the
	// laptop's upload, the namespace's end the download.
	if tb.cfg.Rate != "" {
		steps = append(steps, []string{"tc", "qdisc", "add", "dev", host, "root", "tbf", "rate", tb.cfg.Rate, "burst", "1mbit", "latency", "100ms"})
	}
	if down != "" {
		steps = append(steps, []string{"ip", "netns", "exec", tb.NS, "tc", "qdisc", "add", "dev", peer, "root", "tbf", "rate", down, "burst", "1mbit", "latency", "100ms"})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	if down == tb.cfg.Rate {
		tb.Notes = append(tb.Notes, fmt.Sprintf("link: namespace %s behind veth, tc tbf %s each way", tb.NS, orNone(tb.cfg.Rate)))
	} else {
		tb.Notes = append(tb.Notes, fmt.Sprintf("link: namespace %s behind veth, tc tbf %s up (laptop to cloud), %s down", tb.NS, orNone(tb.cfg.Rate), orNone(down)))
	}
	return nil
}

func orNone(s string) string {
	if s == "" {
		return "(unshaped)"
	}
	return s
}

// cpu makes a cgroup with a CFS quota for the laptop kernel.
func (tb *Testbed) cpu() error {
	root := "/sys/fs/cgroup/cpu"
	if _, err := os.Stat(filepath.Join(root, "cpu.cfs_quota_us")); err != nil {
		return fmt.Errorf("%s/cpu.cfs_quota_us not found", root)
	}
	dir := filepath.Join(root, "ferry-laptop-"+tb.id)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	tb.cgroup = dir
	period := 100000
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte(strconv.Itoa(period)), 0o644); err != nil {
		return err
	}
	quota := int(tb.cfg.LocalCPU * float64(period))
	if err := os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(strconv.Itoa(quota)), 0o644); err != nil {
		return err
	}
	tb.Notes = append(tb.Notes, fmt.Sprintf("laptop: cgroup %s, CPU quota %.0f%% of a core", dir, 100*tb.cfg.LocalCPU))
	return nil
}

// CgroupDir is the laptop's CPU-quota cgroup ("" if none).
func (tb *Testbed) CgroupDir() string { return tb.cgroup }

// SlowLocal moves a process (the laptop kernel) into the quota group.
func (tb *Testbed) SlowLocal(pid int) error {
	if tb.cgroup == "" {
		return nil
	}
	return os.WriteFile(filepath.Join(tb.cgroup, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// Prefix is the command prefix that runs a program inside the cloud
// namespace (empty when there is none).
func (tb *Testbed) Prefix() []string {
	if tb.NS == "" {
		return nil
	}
	return []string{"ip", "netns", "exec", tb.NS}
}

// CloudIP is the address servers in the cloud listen on.
func (tb *Testbed) CloudIP() string {
	if tb.NS == "" {
		return "127.0.0.1"
	}
	return tb.NSIP
}

// Down removes everything Up made; it is safe to call twice.
func (tb *Testbed) Down() {
	if tb.NS != "" {
		_ = run("ip", "netns", "del", tb.NS)
		_ = exec.Command("ip", "link", "del", "fh"+tb.id).Run()
	}
	if tb.cgroup != "" {
		// Processes must leave the group before it can go.
		if b, err := os.ReadFile(filepath.Join(tb.cgroup, "cgroup.procs")); err == nil {
			for _, f := range strings.Fields(string(b)) {
				_ = os.WriteFile("/sys/fs/cgroup/cpu/cgroup.procs", []byte(f), 0o644)
			}
		}
		_ = os.Remove(tb.cgroup)
	}
}

// waitPort waits until addr accepts connections (bounded by ctx).
func waitPort(ctx context.Context, dial func() error) error {
	for {
		if err := dial(); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

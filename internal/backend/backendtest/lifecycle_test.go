package backendtest_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/backend"
	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

// waitFor returns the first message of type msgType with parent req,
// keeping the others for wait.
func (d *driver) waitFor(req *wire.Message, msgType string) *wire.Message {
	d.t.Helper()
	match := func(in wire.Incoming) bool {
		return in.Msg.ParentID() == req.Header.MsgID && in.Msg.Header.MsgType == msgType
	}
	for i, in := range d.stray {
		if match(in) {
			d.stray = append(d.stray[:i:i], d.stray[i+1:]...)
			return in.Msg
		}
	}
	timeout := time.After(10 * time.Second)
	for {
		select {
		case in := <-d.k.Incoming():
			if match(in) {
				return in.Msg
			}
			d.stray = append(d.stray, in)
		case <-timeout:
			d.t.Fatalf("no %s for %s", msgType, req.Header.MsgType)
		}
	}
}

func (d *driver) execAsync(code string, allowStdin bool) *wire.Message {
	return d.send(wire.Shell, "execute_request", map[string]any{"code": code, "silent": false, "store_history": true,
		"user_expressions": map[string]any{}, "allow_stdin": allowStdin, "stop_on_error": true}, nil)
}

func isBusy(m *wire.Message) bool {
	var st struct {
		State string `json:"execution_state"`
	}
	return m.Decode(&st) == nil && st.State == "busy"
}

// TestKillDuringRequest: a kill mid-cell closes Died, loses the namespace,
// answers nothing more, and the next Start is a fresh incarnation.
func TestKillDuringRequest(t *testing.T) {
	d := started(t, location.Remote)
	d.exec("x = 1", nil)
	died := d.k.Died()
	req := d.execAsync("y = 2\nsleep(30)\nz = 3", false)
	queued := d.execAsync("w = 4", false)
	if st := d.waitFor(req, "status"); !isBusy(st) {
		t.Fatalf("first status %s", st.Content)
	}
	d.k.Kill()
	select {
	case <-died:
	default:
		t.Fatal("Died not closed by Kill")
	}
	if d.k.Alive() {
		t.Error("Alive after Kill")
	}
	select {
	case in := <-d.k.Incoming():
		if p := in.Msg.ParentID(); p == req.Header.MsgID && in.Msg.Header.MsgType != "stream" && in.Msg.Header.MsgType != "execute_input" || p == queued.Header.MsgID {
			t.Errorf("after Kill: %s for %s", in.Msg.Header.MsgType, p)
		}
	case <-time.After(100 * time.Millisecond):
	}
	if _, ok := d.k.Value("x"); ok {
		t.Error("x survived the kill")
	}
	if err := d.k.Send(t.Context(), wire.Shell, req); !errors.Is(err, backend.ErrDied) {
		t.Errorf("Send to a dead kernel: %v, want ErrDied", err)
	}
	if st := d.k.Status(); st.State != "dead" || st.LastExit != "killed" {
		t.Errorf("status %+v", st)
	}
	if err := d.k.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d.k.Died() == died || !d.k.Alive() || d.k.Starts() != 2 || len(d.k.Names()) != 0 {
		t.Errorf("after restart: new Died %v, alive %v, starts %d, names %v", d.k.Died() != died, d.k.Alive(), d.k.Starts(), d.k.Names())
	}
	if st := d.k.Status(); st.State != "running" || st.Restarts != 1 {
		t.Errorf("status %+v", st)
	}
	if got := d.exec("w = 5\nw", nil).resultText(); got != "5" {
		t.Errorf("new incarnation answered %q", got)
	}
	if d.k.Executed("y = 2\nsleep(30)\nz = 3") != 1 || d.k.Executed("w = 4") != 0 {
		t.Errorf("Executed: the killed cell %d, the queued one %d", d.k.Executed("y = 2\nsleep(30)\nz = 3"), d.k.Executed("w = 4"))
	}
}

// TestStart: the start delay is honoured and cancellable, a failing start
// fails, concurrent starts start one kernel, and shut down is final.
func TestStart(t *testing.T) {
	t.Run("delay", func(t *testing.T) {
		k := backendtest.New(location.Remote, backendtest.WithStartDelay(150*time.Millisecond))
		defer k.Shutdown(context.Background())
		if k.Alive() || k.KernelInfo() != nil {
			t.Fatal("alive before Start")
		}
		select {
		case <-k.Died():
		default:
			t.Fatal("Died before the first start must be closed")
		}
		t0 := time.Now()
		if err := k.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(t0); d < 150*time.Millisecond {
			t.Errorf("Start took %s, want the 150 ms delay", d)
		}
		if !k.Alive() || k.KernelInfo() == nil {
			t.Error("not alive after Start")
		}
		t0 = time.Now()
		if err := k.Start(t.Context()); err != nil || time.Since(t0) > 50*time.Millisecond {
			t.Errorf("Start of a running kernel: %v after %s, want at once", err, time.Since(t0))
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		k := backendtest.New(location.Remote, backendtest.WithStartDelay(10*time.Second))
		defer k.Shutdown(context.Background())
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		err := k.Start(ctx)
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(t0) > 2*time.Second {
			t.Errorf("Start: %v after %s, want the deadline soon", err, time.Since(t0))
		}
		if k.Alive() || k.Starts() != 0 {
			t.Error("a cancelled start started a kernel")
		}
		k.SetStartDelay(0)
		if err := k.Start(t.Context()); err != nil || !k.Alive() {
			t.Errorf("Start without delay: %v", err)
		}
	})
	t.Run("fails", func(t *testing.T) {
		boom := errors.New("no capacity")
		k := backendtest.New(location.Remote, backendtest.WithFailStart(boom))
		defer k.Shutdown(context.Background())
		if err := k.Start(t.Context()); !errors.Is(err, boom) || k.Alive() {
			t.Errorf("Start: %v, alive %v", err, k.Alive())
		}
		k.SetFailStart(nil)
		if err := k.Start(t.Context()); err != nil || k.Starts() != 1 {
			t.Errorf("Start after the failure cleared: %v, %d starts", err, k.Starts())
		}
	})
	t.Run("concurrent", func(t *testing.T) {
		k := backendtest.New(location.Remote, backendtest.WithStartDelay(20*time.Millisecond))
		defer k.Shutdown(context.Background())
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				if err := k.Start(t.Context()); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if k.Starts() != 1 {
			t.Errorf("%d starts, want 1", k.Starts())
		}
	})
	t.Run("shut down", func(t *testing.T) {
		k := backendtest.New(location.Local)
		if err := k.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := k.Shutdown(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := k.Start(t.Context()); !errors.Is(err, backendtest.ErrShutdown) || k.Alive() {
			t.Errorf("Start after Shutdown: %v", err)
		}
	})
	t.Run("shutdown request", func(t *testing.T) {
		d := started(t, location.Local)
		r := d.do(wire.Control, "shutdown_request", map[string]any{"restart": false}, nil)
		if r.reply.Header.MsgType != "shutdown_reply" {
			t.Errorf("answered %v", r.types())
		}
		select {
		case <-d.k.Died():
		case <-time.After(time.Second):
			t.Error("the kernel did not exit after shutdown_request")
		}
	})
}

// TestInput: input() asks on stdin with the request as parent and binds
// the answer sent back through Send.
func TestInput(t *testing.T) {
	d := started(t, location.Local)
	req := d.execAsync("name = input(\"who? \")\nprint(name)", true)
	var asked *wire.Message
	timeout := time.After(10 * time.Second)
	for asked == nil {
		select {
		case in := <-d.k.Incoming():
			if in.Channel == wire.Stdin {
				asked = in.Msg
			}
		case <-timeout:
			t.Fatal("no input_request")
		}
	}
	var c struct {
		Prompt string `json:"prompt"`
	}
	if asked.Header.MsgType != "input_request" || asked.ParentID() != req.Header.MsgID || asked.Decode(&c) != nil || c.Prompt != "who? " {
		t.Fatalf("%s with parent %s, prompt %q", asked.Header.MsgType, asked.ParentID(), c.Prompt)
	}
	answer, _ := wire.New("input_reply", backend.Session, "ferry", asked.HeaderJSON(), map[string]string{"value": "ada"})
	if err := d.k.Send(t.Context(), wire.Stdin, answer); err != nil {
		t.Fatal(err)
	}
	r := d.wait(req, true, nil)
	if r.stdout() != "ada\n" {
		t.Errorf("printed %q", r.stdout())
	}
	if v, _ := d.k.Value("name"); v != "'ada'" {
		t.Errorf("name = %s", v)
	}
}

// TestInterrupt: an interrupt ends a sleep with KeyboardInterrupt, through
// Interrupt or a control interrupt_request; what ran before stays.
func TestInterrupt(t *testing.T) {
	for _, how := range []string{"Interrupt", "interrupt_request"} {
		t.Run(how, func(t *testing.T) {
			d := started(t, location.Local)
			d.k.Interrupt(t.Context()) // between cells: nothing to interrupt
			code := "x = 1\nsleep(30)\ny = 2"
			req := d.execAsync(code, false)
			if st := d.waitFor(req, "status"); !isBusy(st) {
				t.Fatal("not busy")
			}
			time.Sleep(20 * time.Millisecond) // into the sleep
			t0 := time.Now()
			if how == "Interrupt" {
				if err := d.k.Interrupt(t.Context()); err != nil {
					t.Fatal(err)
				}
			} else {
				ir := d.send(wire.Control, "interrupt_request", map[string]any{}, nil)
				if rep := d.waitFor(ir, "interrupt_reply"); rep == nil {
					t.Fatal("no interrupt_reply")
				}
			}
			r := d.wait(req, true, nil)
			if c := r.content(); c["status"] != "error" || c["ename"] != "KeyboardInterrupt" || time.Since(t0) > 5*time.Second {
				t.Errorf("reply %v after %s", c, time.Since(t0))
			}
			if _, ok := d.k.Value("x"); !ok {
				t.Error("x lost")
			}
			if _, ok := d.k.Value("y"); ok {
				t.Error("the statement after the sleep ran")
			}
			if got := d.exec("3", nil).resultText(); got != "3" {
				t.Errorf("the next cell answered %q (a stale interrupt?)", got)
			}
		})
	}
}

// TestNoGoroutineLeft: every goroutine a fake starts ends with it.
func TestNoGoroutineLeft(t *testing.T) {
	before := runtime.NumGoroutine()
	k := backendtest.New(location.Local)
	for range 3 {
		if err := k.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		m, _ := wire.New("execute_request", backend.Session, "ferry", nil, map[string]any{"code": "sleep(30)", "user_expressions": map[string]any{}})
		_ = k.Send(t.Context(), wire.Shell, m)
		k.Kill()
	}
	if err := k.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := k.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/testenv"
	"github.com/ferry-nb/ferry/internal/wire"
)

// shutdownSeen is what a front end sees for one shutdown_request: the
// channel and content of the reply, and the IOPub messages it caused.
type shutdownSeen struct {
	ReplyChannel wire.Channel
	Reply        map[string]any
	IOPub        []string      // types, statuses as status:STATE
	After        time.Duration // from the request to the reply
	// Stray is the shutdown_replies IOPub carried after the request with
	// another parent or none: a front end sees them too, and the classic
	// Notebook takes any shutdown_reply{restart: false} for the kernel's
	// death.
	Stray []string
}

func (s shutdownSeen) String() string {
	return fmt.Sprintf("reply on %s %s, IOPub %s, stray IOPub %s", s.ReplyChannel, toJSON(s.Reply), strings.Join(s.IOPub, ","), strings.Join(s.Stray, ","))
}

// sendShutdown connects a fresh raw client to the kernel at info, waits
// until its IOPub subscription is live, sends shutdown_request{restart} on
// ch and records what comes back until the reply and idle are in and the
// kernel has gone quiet for a moment.
func sendShutdown(t *testing.T, info wire.ConnInfo, ch wire.Channel, restart bool) shutdownSeen {
	t.Helper()
	conn, err := wire.Dial(info, wire.NewID())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A SUB socket misses what is published before it joined: ask for
	// kernel_info until its status arrives on IOPub.
	for ready := false; !ready; {
		ki, err := conn.NewMessage("kernel_info_request", map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Send(wire.Shell, ki); err != nil {
			t.Fatal(err)
		}
		wait := time.After(2 * time.Second)
	drain:
		for {
			select {
			case in := <-conn.Incoming():
				if in.Channel == wire.IOPub && in.Msg.ParentID() == ki.Header.MsgID && in.Msg.Header.MsgType == "status" {
					ready = true
				}
			case <-wait:
				break drain
			case <-ctx.Done():
				t.Fatal("the kernel never answered kernel_info on IOPub")
			}
			if ready {
				break
			}
		}
	}
	// Let the kernel_info exchange finish before the shutdown.
	time.Sleep(300 * time.Millisecond)
drainOld:
	for {
		select {
		case <-conn.Incoming():
		default:
			break drainOld
		}
	}
	m, err := conn.NewMessage("shutdown_request", map[string]any{"restart": restart})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Send(ch, m); err != nil {
		t.Fatal(err)
	}
	var seen shutdownSeen
	sent := time.Now()
	idle := false
	var quiet <-chan time.Time
	for {
		select {
		case in, ok := <-conn.Incoming():
			if !ok {
				return seen
			}
			if in.Msg.ParentID() != m.Header.MsgID {
				if in.Channel == wire.IOPub && in.Msg.Header.MsgType == "shutdown_reply" {
					seen.Stray = append(seen.Stray, string(in.Msg.Content)+" parent "+string(in.Msg.Parent))
				}
				continue
			}
			switch in.Channel {
			case wire.IOPub:
				typ := in.Msg.Header.MsgType
				if typ == "status" {
					st := fmt.Sprint(decode(t, in.Msg)["execution_state"])
					typ += ":" + st
					idle = idle || st == "idle"
				}
				seen.IOPub = append(seen.IOPub, typ)
			default:
				if in.Msg.Header.MsgType != "shutdown_reply" {
					t.Fatalf("a %s on %s answered the shutdown_request", in.Msg.Header.MsgType, in.Channel)
				}
				if seen.Reply != nil {
					t.Fatalf("a second shutdown_reply on %s", in.Channel)
				}
				seen.ReplyChannel, seen.Reply, seen.After = in.Channel, decode(t, in.Msg), time.Since(sent)
			}
			if idle && seen.Reply != nil && quiet == nil {
				quiet = time.After(500 * time.Millisecond)
			}
		case <-quiet:
			return seen
		case <-ctx.Done():
			t.Fatalf("no reply and idle within 60 s; saw %s", seen)
		}
	}
}

// Restart from the classic Notebook (and JupyterLab's restart on older
// jupyter_client) is shutdown_request{restart: true}: the kernel manager
// waits for the reply and for the process to exit, then starts a new one.
// Ferry answers it exactly as ipykernel does, on the channel it came on,
// with the same content and IOPub around it, for restart true and false.
func TestShutdownReplyLikeIPykernel(t *testing.T) {
	testenv.SkipIfShort(t, "four ferry kernels and four plain ipykernels shut down, 15 s")
	for _, ch := range []wire.Channel{wire.Control, wire.Shell} {
		for _, restart := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s restart=%v", ch, restart), func(t *testing.T) {
				want := sendShutdown(t, startPlainIPykernel(t), ch, restart)

				k := startKernel(t)
				got := sendShutdown(t, k.info, ch, restart)
				t.Logf("replies after: Ferry %s, ipykernel %s", got.After, want.After)
				if got.ReplyChannel != ch || toJSON(got.Reply) != toJSON(want.Reply) {
					t.Errorf("Ferry: %s\nipykernel: %s", got, want)
				}
				if want.Reply["restart"] != restart || want.Reply["status"] != "ok" {
					t.Fatalf("ipykernel's own reply is %s: the comparison proves nothing", toJSON(want.Reply))
				}
				if strings.Join(got.IOPub, ",") != strings.Join(want.IOPub, ",") {
					t.Errorf("IOPub around the shutdown:\nFerry:     %s\nipykernel: %s", strings.Join(got.IOPub, ","), strings.Join(want.IOPub, ","))
				}
				// No other shutdown_reply on IOPub: Ferry stopping its own
				// kernels (their shutdown_reply{restart: false}) must not
				// reach the front end (issue 17: "Dead kernel" on Restart).
				if len(got.Stray) != 0 || len(want.Stray) != 0 {
					t.Errorf("shutdown_reply on IOPub not parented to the shutdown_request:\nFerry:     %q\nipykernel: %q", got.Stray, want.Stray)
				}
				select {
				case <-k.exited:
				case <-time.After(20 * time.Second):
					t.Fatal("ferry kernel did not exit within 20 s of the shutdown_request")
				}
			})
		}
	}
}

package backendtest_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

func TestInterpreter(t *testing.T) {
	cases := []struct {
		name, code   string
		stdout, want string // stdout and the execute_result's text
		ename        string // the error raised, if any
		values       map[string]string
		unbound      []string
		effects      map[string]int
	}{
		{name: "int literal result", code: "x = 5\nx", want: "5", values: map[string]string{"x": "5"}},
		{name: "str literal", code: "x = \"s\"\nprint(x)\nx", stdout: "s\n", want: "'s'"},
		{name: "single quotes", code: "x = 'it\\'s'\nx", want: `"it's"`},
		{name: "arithmetic", code: "x = 5\ny = x + 1\nz = y - 10\nprint(x, y, z)", stdout: "5 6 -4\n"},
		{name: "negative literal", code: "x = -3 - 4\nx", want: "-7"},
		{name: "str join", code: "x = \"a\" + \"b\"\nx", want: "'ab'"},
		{name: "alias sees append", code: "a = []\nb = a\nb.append(1)\na", want: "[1]", values: map[string]string{"b": "[1]"}},
		{name: "item assignment", code: "x = [1, \"a\"]\nx[1] = 2\nx[-2] = 0\nx", want: "[0, 2]"},
		{name: "item read is the object", code: "inner = []\nouter = [inner]\ny = outer[0]\ny.append(3)\nouter", want: "[[3]]"},
		{name: "list holding itself", code: "x = []\nx.append(x)\nx", want: "[[...]]"},
		{name: "blob", code: "x = blob(4)\nlen(x)", want: "4", values: map[string]string{"x": `bytearray(b'\x07\x8a\r\x90')`}},
		{name: "noise", code: "x = noise(16)\nlen(x)", want: "16"},
		{name: "opened", code: "f = opened()\nf", want: "<_io.TextIOWrapper name='fake.txt' mode='r' encoding='UTF-8'>"},
		{name: "None is not shown", code: "x = None\nx"},
		{name: "print returns None", code: "print(1, \"a\")", stdout: "1 a\n"},
		{name: "comments and blank lines", code: "# a comment\n\nx = 1  # trailing\npass\nx", want: "1"},
		{name: "del", code: "x = 1\ny = 2\ndel x\ny", want: "2", unbound: []string{"x"}},
		{name: "del unbound", code: "x = 1\ndel x, x", ename: "NameError", unbound: []string{"x"}},
		{name: "raise keeps what ran before", code: "x = 1\nraise ValueError(\"bad\")\ny = 2", ename: "ValueError",
			values: map[string]string{"x": "1"}, unbound: []string{"y"}},
		{name: "syntax error runs nothing", code: "x = 1\ny = )", ename: "SyntaxError", unbound: []string{"x"}},
		{name: "indented line", code: "x = 1\n  y = 2", ename: "SyntaxError", unbound: []string{"x"}},
		{name: "unknown statement", code: "for i in x: pass", ename: "SyntaxError"},
		{name: "unknown function", code: "x = 1\nfoo()", ename: "NameError", values: map[string]string{"x": "1"}},
		{name: "unknown name", code: "x = y", ename: "NameError", unbound: []string{"x"}},
		{name: "type error", code: "x = 1 + \"a\"", ename: "TypeError"},
		{name: "no such method", code: "x = 1\nx.append(2)", ename: "AttributeError"},
		{name: "index error", code: "x = [1]\nx[5]", ename: "IndexError"},
		{name: "blob too big", code: "x = blob(-1)", ename: "ValueError"},
		{name: "effects count", code: "effect(\"mail\")\neffect(\"mail\")\neffect(\"db\")", effects: map[string]int{"mail": 2, "db": 1}},
		{name: "sleep briefly", code: "sleep(0.01)\nsleep(0)\n1", want: "1"},
		{name: "input without stdin", code: "x = input(\"? \")", ename: "StdinNotImplementedError"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := started(t, location.Local)
			r := d.exec(c.code, nil)
			if got := r.stdout(); got != c.stdout {
				t.Errorf("stdout %q, want %q", got, c.stdout)
			}
			if got := r.resultText(); got != c.want {
				t.Errorf("result %q, want %q", got, c.want)
			}
			cont := r.content()
			if c.ename == "" && cont["status"] != "ok" {
				t.Errorf("reply %v, want ok", cont)
			}
			if c.ename != "" {
				errs := r.iopub("error")
				if cont["status"] != "error" || cont["ename"] != c.ename || len(errs) != 1 {
					t.Errorf("reply %v with %d error messages, want one %s", cont, len(errs), c.ename)
				}
			}
			for n, want := range c.values {
				if got, ok := d.k.Value(n); !ok || got != want {
					t.Errorf("%s = %q (bound: %v), want %q", n, got, ok, want)
				}
			}
			for _, n := range c.unbound {
				if v, ok := d.k.Value(n); ok {
					t.Errorf("%s is bound to %s, want unbound", n, v)
				}
			}
			for n, want := range c.effects {
				if got := d.k.Effects(n); got != want {
					t.Errorf("Effects(%q) = %d, want %d", n, got, want)
				}
			}
			if got := d.k.Executed(c.code); got != 1 {
				t.Errorf("Executed = %d, want 1", got)
			}
		})
	}
}

// TestMessages: a request's messages come as ipykernel sends them: busy
// first, idle last, the reply before idle, each with the request as
// parent; the execution count counts stored cells only.
func TestMessages(t *testing.T) {
	d := started(t, location.Local)
	r := d.exec("print(1)\n2", nil)
	want := []string{"status", "execute_input", "stream", "execute_result", "execute_reply", "status"}
	if !slices.Equal(r.types(), want) {
		t.Fatalf("messages %v, want %v", r.types(), want)
	}
	for _, m := range r.msgs {
		if m.Msg.ParentID() != r.req.Header.MsgID {
			t.Errorf("%s has parent %s, want the request", m.Msg.Header.MsgType, m.Msg.ParentID())
		}
		if want := wire.IOPub; m.Msg.Header.MsgType == "execute_reply" {
			if m.Channel != wire.Shell {
				t.Errorf("reply on %s", m.Channel)
			}
		} else if m.Channel != want {
			t.Errorf("%s on %s", m.Msg.Header.MsgType, m.Channel)
		}
	}
	if !strings.Contains(string(r.msgs[0].Msg.Content), "busy") || !strings.Contains(string(r.msgs[5].Msg.Content), "idle") {
		t.Errorf("statuses %s ... %s", r.msgs[0].Msg.Content, r.msgs[5].Msg.Content)
	}
	count := func(r *result) float64 { n, _ := r.content()["execution_count"].(float64); return n }
	if n := count(r); n != 1 {
		t.Errorf("first cell's count %v", n)
	}
	if n := count(d.hiddenExec("x = 1", nil)); n != 1 {
		t.Errorf("a silent cell counted: %v", n)
	}
	if n := count(d.exec("   ", nil)); n != 1 {
		t.Errorf("a blank cell counted: %v", n)
	}
	if n := count(d.exec("raise KeyError(\"k\")", nil)); n != 2 {
		t.Errorf("a cell that raised is counted as 2, got %v", n)
	}
	if got := d.hiddenExec("print(7)\n8", nil); got.resultText() != "" || got.stdout() != "7\n" || len(got.iopub("execute_input")) != 0 {
		t.Errorf("silent cell: result %q, stdout %q, %d execute_input", got.resultText(), got.stdout(), len(got.iopub("execute_input")))
	}
	// Other requests.
	ki := d.do(wire.Shell, "kernel_info_request", map[string]any{}, nil)
	if ki.reply.Header.MsgType != "kernel_info_reply" || !strings.Contains(string(ki.reply.Content), `"python"`) {
		t.Errorf("kernel_info: %s %s", ki.reply.Header.MsgType, ki.reply.Content)
	}
	if ic := d.do(wire.Shell, "is_complete_request", map[string]any{"code": "x"}, nil); ic.content()["status"] != "complete" {
		t.Errorf("is_complete: %v", ic.content())
	}
	unknown := d.wait(d.send(wire.Shell, "no_such_request", map[string]any{}, nil), false, nil)
	if !slices.Equal(unknown.types(), []string{"status", "status"}) {
		t.Errorf("unknown type answered %v, want busy and idle only", unknown.types())
	}
	// Malformed content is answered with an error, not a panic.
	bad := &wire.Message{Header: wire.NewHeader("execute_request", "s", "u"), Parent: []byte("{}"), Content: []byte(`{"code": 5}`)}
	if err := d.k.Send(t.Context(), wire.Shell, bad); err != nil {
		t.Fatal(err)
	}
	if got := d.wait(bad, true, nil).content(); got["status"] != "error" {
		t.Errorf("malformed execute_request answered %v", got)
	}
	if got := d.exec("1", map[string]string{"a": "x + 1", "b": "nope", "c": "print("}); got.content()["status"] != "ok" {
		t.Fatalf("%v", got.content())
	} else if a, b, c := string(got.expr("a")), string(got.expr("b")), string(got.expr("c")); !strings.Contains(a, `"text/plain":"2"`) ||
		!strings.Contains(b, "NameError") || !strings.Contains(c, "SyntaxError") {
		t.Errorf("user_expressions: a %s, b %s, c %s", a, b, c)
	}
}

package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ferry-nb/ferry/internal/wire"
)

// bundle wraps text as ipykernel returns a user_expressions result.
func bundle(t testing.TB, text string) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(map[string]any{"status": "ok", "data": map[string]string{"text/plain": text}, "metadata": map[string]any{}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseReportRejects(t *testing.T) {
	tests := []struct {
		name string
		raw  string
		says string
	}{
		{"nothing", ``, "no report"},
		{"not JSON", `{`, "unexpected end"},
		{"a list", `[]`, "cannot unmarshal"},
		{"the expression raised", `{"status":"error","ename":"NameError","evalue":"name '_ferry_agent' is not defined"}`, "NameError: name '_ferry_agent' is not defined"},
		{"no status", `{"data":{"text/plain":"{}"}}`, ""},
		{"text/plain not a string", `{"status":"ok","data":{"text/plain":5}}`, "cannot unmarshal"},
		{"text is Python, not JSON", string(bundle(t, `{'changed': {}}`)), "malformed report"},
		{"text cut short", string(bundle(t, `{"changed": {"x": {"size": 1`)), "malformed report"},
		{"changed a list", string(bundle(t, `{"changed": []}`)), "malformed report"},
		{"size a string", string(bundle(t, `{"changed": {"x": {"size": "big"}}}`)), "malformed report"},
		{"size beyond int64", string(bundle(t, `{"changed": {"x": {"size": 1e40}}}`)), "malformed report"},
		{"movable a string", string(bundle(t, `{"changed": {"x": {"movable": "yes"}}}`)), "malformed report"},
		{"deleted a string", string(bundle(t, `{"deleted": "x"}`)), "malformed report"},
		{"the agent failed", string(bundle(t, `{"changed": {}, "error": "RuntimeError: boom"}`)), "RuntimeError: boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseReport(json.RawMessage(tt.raw))
			if err == nil {
				t.Fatalf("accepted %s", tt.raw)
			}
			if !strings.Contains(err.Error(), tt.says) {
				t.Fatalf("error %q does not say %q", err, tt.says)
			}
		})
	}
}

// FuzzParseReport: no input makes the report parser panic; it accepts only
// a bundle with status ok whose text/plain is a report without an error,
// and a report Ferry's agent writes reads back the same.
func FuzzParseReport(f *testing.F) {
	good := Report{Changed: map[string]Change{
		"x":  {Size: 8000, Hash: "ab12", Kind: "ndarray", Movable: true, Group: "g:x"},
		"np": {Kind: "module", Movable: true, Module: "numpy"},
		"g":  {Kind: "generator", Reason: "generator"},
		RNG:  {Size: 2500, Hash: "ff", Kind: "rng", Movable: true},
	}, Deleted: []string{"old", "é\u2028"}}
	js, _ := json.Marshal(good)
	f.Add(string(bundle(f, string(js))))
	f.Add(string(bundle(f, `{"changed":{},"deleted":[]}`)))
	f.Add(string(bundle(f, `{"changed":{"x":null},"deleted":null}`)))
	f.Add(string(bundle(f, `{"changed":{"x":{"size":-1,"hash":7}}}`)))
	f.Add(string(bundle(f, `{"error":"ValueError: bad\nsecond line"}`)))
	f.Add(string(bundle(f, `null`)))
	f.Add(`{"status":"error","ename":"KeyError","evalue":"'x'","traceback":["a","b"]}`)
	f.Add(`{"status":"ok","data":{"text/plain":"{\"changed\":{\"\\ud800\":{}}}"}}`)
	f.Add(`{"status":"ok","data":null}`)
	f.Add(`null`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, raw string) {
		rep, err := ParseReport(json.RawMessage(raw))
		if err != nil {
			return
		}
		var b struct {
			Status string `json:"status"`
		}
		if json.Unmarshal([]byte(raw), &b) != nil || b.Status != "ok" {
			t.Fatalf("accepted a bundle whose status is not ok: %s", raw)
		}
		if rep.Error != "" {
			t.Fatalf("accepted a report that says the agent failed: %q", rep.Error)
		}
		// What was accepted reads back the same when the agent writes it.
		again, err := json.Marshal(rep)
		if err != nil {
			t.Fatalf("an accepted report does not encode: %v", err)
		}
		rep2, err := ParseReport(bundle(t, string(again)))
		if err != nil {
			t.Fatalf("a report written from an accepted one is rejected: %v", err)
		}
		if !reflect.DeepEqual(rep, rep2) {
			t.Fatalf("report %+v read back as %+v", rep, rep2)
		}
	})
}

// FuzzParseBundle: no input panics the user_expressions reader; it
// returns text only for status ok, and exactly the text/plain it was given.
func FuzzParseBundle(f *testing.F) {
	f.Add(`{"status":"ok","data":{"text/plain":"{\"bytes\":1,\"seconds\":0.5,\"error\":\"\"}"}}`)
	f.Add(`{"status":"error","ename":"","evalue":""}`)
	f.Add(`{"status":"ok","data":{"text/plain":null,"text/html":"<b>"}}`)
	f.Add(`{"status":"abort"}`)
	f.Add(`"ok"`)
	f.Fuzz(func(t *testing.T, raw string) {
		text, err := ParseBundle(json.RawMessage(raw))
		if err != nil {
			if text != "" {
				t.Fatalf("a rejected bundle also gave %q", text)
			}
			return
		}
		var b struct {
			Status string `json:"status"`
			Data   struct {
				Text string `json:"text/plain"`
			} `json:"data"`
		}
		if json.Unmarshal([]byte(raw), &b) != nil || b.Status != "ok" || b.Data.Text != text {
			t.Fatalf("accepted %s as %q", raw, text)
		}
	})
}

// FuzzCommData: no comm message from a kernel panics the reader of the
// agent's messages; it reads only comm_msg, hands back the data exactly
// as sent (Ferry forwards it unchanged), and every message the agent
// sends reads back the same.
func FuzzCommData(f *testing.F) {
	f.Add("comm_msg", `{"comm_id":"c","data":{"op":"chunk","id":"t","seq":3,"z":true,"raw":8388608}}`)
	f.Add("comm_msg", `{"comm_id":"c","data":{"op":"packed","id":"t","hash":"ab","size":10,"raw_size":20,"chunks":1,"names":["x"],"unmovable":{"g":"generator"},"seconds":0.25}}`)
	f.Add("comm_msg", `{"comm_id":"c","data":{"op":"error","id":null,"error":"ValueError: unknown op 'x'"}}`)
	f.Add("comm_msg", `{"comm_id":"c","data":{"op":"loaded","id":"t","hash":"ab","names":null}}`)
	f.Add("comm_msg", `{"data":{"seq":1e40}}`)
	f.Add("comm_msg", `{"data":{"seq":-1,"chunks":-5,"size":-9223372036854775808}}`)
	f.Add("comm_msg", `{"data":null}`)
	f.Add("comm_msg", `{"data":[]}`)
	f.Add("comm_msg", `{}`)
	f.Add("comm_msg", `[]`)
	f.Add("comm_close", `{"comm_id":"c","data":{"error":"unauthorised"}}`)
	f.Add("stream", `{"name":"stdout","text":"x"}`)
	f.Fuzz(func(t *testing.T, msgType, content string) {
		m := &wire.Message{Header: wire.Header{MsgType: msgType}, Content: json.RawMessage(content)}
		d, raw, ok := CommData(m)
		if !ok {
			if !reflect.DeepEqual(d, Msg{}) || raw != nil {
				t.Fatalf("a rejected message also gave %+v %s", d, raw)
			}
			return
		}
		if msgType != "comm_msg" {
			t.Fatalf("read a %q as an agent message", msgType)
		}
		var c struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal([]byte(content), &c); err != nil || string(c.Data) != string(raw) {
			t.Fatalf("data %s handed on as %s", c.Data, raw)
		}
		var d2 Msg
		if err := json.Unmarshal(raw, &d2); err != nil || !reflect.DeepEqual(d, d2) {
			t.Fatalf("data %s read as %+v", raw, d)
		}
		// The agent writes what Ferry reads back the same.
		again, err := json.Marshal(map[string]any{"comm_id": "c", "data": d})
		if err != nil {
			t.Fatalf("an accepted agent message does not encode: %v", err)
		}
		d3, _, ok := CommData(&wire.Message{Header: wire.Header{MsgType: "comm_msg"}, Content: again})
		if !ok || !reflect.DeepEqual(d, d3) {
			t.Fatalf("%+v read back as %+v", d, d3)
		}
	})
}

func TestCheckProtocol(t *testing.T) {
	if err := CheckProtocol(bundle(t, strconv.Itoa(ProtocolVersion))); err != nil {
		t.Fatalf("version %d rejected: %v", ProtocolVersion, err)
	}
	for _, raw := range []json.RawMessage{bundle(t, "1"), bundle(t, "'2'"), json.RawMessage(`{"status":"error","ename":"AttributeError","evalue":"no PROTOCOL"}`)} {
		if err := CheckProtocol(raw); !errors.Is(err, ErrProtocol) {
			t.Errorf("CheckProtocol(%s) = %v, want ErrProtocol", raw, err)
		}
	}
}

// TestProtocolVersionMatchesPython: the two halves of the protocol carry
// one version; agent.py's PROTOCOL is the Go constant.
func TestProtocolVersionMatchesPython(t *testing.T) {
	want := fmt.Sprintf("\nPROTOCOL = %d\n", ProtocolVersion)
	if !strings.Contains(Source, want) {
		t.Fatalf("agent.py does not say %q: bump both halves together", strings.TrimSpace(want))
	}
}

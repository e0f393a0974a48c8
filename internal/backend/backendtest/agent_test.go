package backendtest_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/backend/backendtest"
	"github.com/ferry-nb/ferry/internal/location"
	"github.com/ferry-nb/ferry/internal/wire"
)

func sorted(m map[string]agent.Change) []string {
	return slices.Sorted(maps.Keys(m))
}

// TestReport: the post-cell report says what agent.py would: names bound
// or rebound, contents checked for the maybe names (or all when dynamic),
// length changes seen anyway, deletes, alias groups, movability.
func TestReport(t *testing.T) {
	d := started(t, location.Local)
	if r := d.hiddenExec("", map[string]string{agent.ReportKey: agent.ReportExpr(nil, false, false, nil, false)}); true {
		if _, err := agent.ParseReport(r.expr(agent.ReportKey)); err == nil || !strings.Contains(err.Error(), "ModuleNotFoundError") {
			t.Fatalf("report before install: %v, want ModuleNotFoundError", err)
		}
	}
	d.exec("pre = 1", nil)
	d.install("s3cret")
	steps := []struct {
		code    string
		maybe   []string
		dynamic bool
		changed []string
		deleted []string
		groups  map[string]string // name -> group ("" = none) for changed names
	}{
		{code: "", changed: nil}, // install fingerprinted pre
		{code: "x = 5", changed: []string{"x"}},
		{code: "y = x", changed: []string{"y"}}, // an int alias: atomic, no group
		{code: "x = 5", changed: []string{"x"}}, // rebound to a new object
		{code: "b = blob(100)", changed: []string{"b"}},
		{code: "a = []\nc = a", changed: []string{"a", "c"}, groups: map[string]string{"a": "g:a", "c": "g:a"}},
		// An append changes the length, which the shallow signature catches
		// even for names not named maybe (as agent.py); the alias comes along.
		{code: "a.append(1)", changed: []string{"a", "c"}, groups: map[string]string{"a": "g:a", "c": "g:a"}},
		// An item assignment keeps the length: seen only when named maybe,
		// or when the cell is dynamic.
		{code: "a[0] = 2", changed: nil},
		{code: "a[0] = 3", maybe: []string{"c"}, changed: []string{"a", "c"}, groups: map[string]string{"a": "g:a", "c": "g:a"}},
		{code: "a[0] = 4", dynamic: true, changed: []string{"a", "c"}, groups: map[string]string{"a": "g:a", "c": "g:a"}},
		{code: "a[0] = 4", maybe: []string{"a"}, changed: nil}, // same content
		{code: "del x", deleted: []string{"x"}},
		{code: "f = opened()\nh = [f]", changed: []string{"f", "h"}, groups: map[string]string{"f": "g:f", "h": "g:f"}},
		{code: "n = noise(8)", changed: []string{"n"}},
	}
	for i, st := range steps {
		r := d.exec(st.code, map[string]string{agent.ReportKey: agent.ReportExpr(st.maybe, st.dynamic, false, nil, false)})
		rep, err := agent.ParseReport(r.expr(agent.ReportKey))
		if err != nil {
			t.Fatalf("step %d %q: %v", i, st.code, err)
		}
		if got := sorted(rep.Changed); !slices.Equal(got, st.changed) {
			t.Errorf("step %d %q: changed %v, want %v", i, st.code, got, st.changed)
		}
		if !slices.Equal(rep.Deleted, st.deleted) && (len(rep.Deleted)+len(st.deleted) > 0) {
			t.Errorf("step %d %q: deleted %v, want %v", i, st.code, rep.Deleted, st.deleted)
		}
		for n, ch := range rep.Changed {
			if want := st.groups[n]; ch.Group != want {
				t.Errorf("step %d %q: %s in group %q, want %q", i, st.code, n, ch.Group, want)
			}
		}
	}
	if rep := d.report(nil, false); len(rep.Changed) != 0 {
		t.Errorf("a second report changed %v", sorted(rep.Changed))
	}
	// A value without a content hash (a file, or one holding it) is
	// reported whenever its contents are checked, as agent.py does.
	if rep := d.report(nil, true); !slices.Equal(sorted(rep.Changed), []string{"f", "h"}) {
		t.Errorf("a dynamic report changed %v, want the unhashable [f h]", sorted(rep.Changed))
	}
	// The descriptions of the last values.
	d.exec("b = blob(100)\ns = \"hi\"\nf2 = f", nil)
	rep := d.report(nil, false)
	raw, _ := d.k.Bytes("b")
	sum := sha256.Sum256(raw)
	if b := rep.Changed["b"]; b.Hash != hex.EncodeToString(sum[:]) || b.Size != 100 || b.Kind != "bytearray" || !b.Movable {
		t.Errorf("b described as %+v, want the SHA-256 of its 100 bytes", b)
	}
	if f := rep.Changed["f2"]; f.Movable || f.Reason != "open file" || f.Hash != "" || f.Group != "g:f" {
		t.Errorf("f2 described as %+v", f)
	}
	if h := rep.Changed["h"]; h.Movable || !strings.Contains(h.Reason, "open file") {
		t.Errorf("h described as %+v (it holds a file)", h)
	}
	if s := rep.Changed["s"]; s.Kind != "str" || s.Hash == "" || !s.Movable {
		t.Errorf("s described as %+v", s)
	}
	// A cell that raised evaluates no user_expressions; asking again shows
	// what it bound before raising.
	r := d.exec("z = 1\nraise ValueError(\"late\")", map[string]string{agent.ReportKey: agent.ReportExpr(nil, false, false, nil, false)})
	if ue, _ := r.content()["user_expressions"].(map[string]any); r.content()["status"] != "error" || ue == nil || len(ue) != 0 {
		t.Errorf("a cell that raised answered %v, want an error with empty user_expressions", r.content())
	}
	if rep := d.report(nil, false); !slices.Equal(sorted(rep.Changed), []string{"z"}) {
		t.Errorf("after the raise: changed %v, want [z]", sorted(rep.Changed))
	}
	if got := d.hiddenExec("", map[string]string{"p": agent.ProtocolExpr, "d": agent.DumpSessionExpr}); true {
		if err := agent.CheckProtocol(got.expr("p")); err != nil {
			t.Error(err)
		}
		text, err := agent.ParseBundle(got.expr("d"))
		var dump struct{ Bytes int64 }
		if err != nil || json.Unmarshal([]byte(text), &dump) != nil || dump.Bytes < 100 {
			t.Errorf("dump size: %q, %v", text, err)
		}
	}
}

// transfer moves names from src to dst the way Ferry's kernel does: it
// asks src to pack with a window, relays each begin and chunk to dst as
// it comes, asks for more after each pause, then asks dst to load with the
// hash src gave (or the one hash returns).
type transfer struct {
	src, dst           *driver
	srcComm, dstComm   string
	window             int
	pauses, chunks     int
	maxChunk           int
	packed             *agent.Msg
	errs               []string
	tamperHash         func(string) string
	loaded, loadErrors []agent.Msg
}

func (tr *transfer) run(t *testing.T, id string, names []string) {
	t.Helper()
	relay := func(in wire.Incoming) {
		msg, raw, ok := agent.CommData(in.Msg)
		if !ok || msg.ID != id {
			return
		}
		switch msg.Op {
		case agent.OpBegin, agent.OpChunk:
			if msg.Op == agent.OpChunk {
				if len(in.Msg.Buffers) != 1 {
					t.Fatalf("chunk %d has %d buffers", msg.Seq, len(in.Msg.Buffers))
				}
				tr.chunks++
				tr.maxChunk = max(tr.maxChunk, len(in.Msg.Buffers[0]))
			}
			tr.dst.send(wire.Shell, "comm_msg", map[string]any{"comm_id": tr.dstComm, "data": raw}, in.Msg.Buffers)
		case agent.OpPaused:
			tr.pauses++
		case agent.OpPacked:
			m := msg
			tr.packed = &m
		case agent.OpError:
			tr.errs = append(tr.errs, msg.Error)
		}
	}
	op := map[string]any{"op": agent.OpPack, "id": id, "names": names, "compress": true, "window": tr.window}
	for {
		pauses := tr.pauses
		req := tr.src.send(wire.Shell, "comm_msg", map[string]any{"comm_id": tr.srcComm, "data": op}, nil)
		tr.src.wait(req, false, relay)
		if tr.pauses == pauses || tr.packed != nil || len(tr.errs) > 0 {
			break
		}
		op = map[string]any{"op": agent.OpMore, "id": id}
	}
	if tr.packed == nil {
		t.Fatalf("no packed message; errors %v", tr.errs)
	}
	hash := tr.packed.Hash
	if tr.tamperHash != nil {
		hash = tr.tamperHash(hash)
	}
	for _, m := range tr.dst.comm(tr.dstComm, map[string]any{"op": agent.OpLoad, "id": id, "hash": hash, "chunks": tr.packed.Chunks}, nil) {
		switch m.Op {
		case agent.OpLoaded:
			tr.loaded = append(tr.loaded, m)
		case agent.OpError:
			tr.loadErrors = append(tr.loadErrors, m)
		}
	}
}

// pair returns two fakes with the agent installed and the state comm open.
func pair(t *testing.T, opts ...backendtest.Option) (*driver, *driver, string, string) {
	src, dst := started(t, location.Local, opts...), started(t, location.Remote, opts...)
	src.install("secret")
	dst.install("secret")
	srcComm, r1 := src.open("secret")
	dstComm, r2 := dst.open("secret")
	if len(r1.iopub("comm_close"))+len(r2.iopub("comm_close")) > 0 {
		t.Fatal("the state comm was closed with the right secret")
	}
	return src, dst, srcComm, dstComm
}

const srcCell = "big = blob(300000)\nalias = big\ninner = []\nouter = [inner]\nf = opened()\nn = 7"

func TestTransfer(t *testing.T) {
	src, dst, srcComm, dstComm := pair(t)
	src.exec(srcCell, nil)
	tr := &transfer{src: src, dst: dst, srcComm: srcComm, dstComm: dstComm, window: 2}
	tr.run(t, "t1", []string{"alias", "big", "f", "inner", "missing", "n", "outer"})
	if tr.pauses < 2 || tr.chunks != tr.packed.Chunks || tr.maxChunk > backendtest.DefaultChunkSize {
		t.Errorf("%d chunks (packed says %d, largest %d bytes) in %d pauses; want several windows of chunks of at most %d",
			tr.chunks, tr.packed.Chunks, tr.maxChunk, tr.pauses, backendtest.DefaultChunkSize)
	}
	if want := []string{"alias", "big", "inner", "n", "outer"}; !slices.Equal(tr.packed.Names, want) {
		t.Errorf("packed %v, want %v", tr.packed.Names, want)
	}
	if tr.packed.Unmovable["f"] != "open file" || len(tr.packed.Unmovable) != 1 {
		t.Errorf("unmovable %v, want f (open file)", tr.packed.Unmovable)
	}
	if len(tr.loaded) != 1 || tr.loaded[0].Hash != tr.packed.Hash || len(tr.loadErrors) > 0 {
		t.Fatalf("loaded %+v, errors %+v", tr.loaded, tr.loadErrors)
	}
	if !slices.Equal(dst.k.Names(), tr.packed.Names) {
		t.Errorf("target holds %v, want %v", dst.k.Names(), tr.packed.Names)
	}
	for _, n := range tr.packed.Names {
		a, _ := src.k.Value(n)
		b, _ := dst.k.Value(n)
		if a != b {
			t.Errorf("%s differs after the move", n)
		}
	}
	// A loaded value is fingerprinted: the next report does not list it.
	if rep := dst.report(nil, false); len(rep.Changed) != 0 {
		t.Errorf("after the load the target reported %v", sorted(rep.Changed))
	}
	// Shared objects are one object at the target too.
	if got := dst.exec("inner.append(1)\nouter", nil).resultText(); got != "[[1]]" {
		t.Errorf("outer after appending to inner at the target: %s", got)
	}
	if rep := dst.report(nil, false); !slices.Equal(sorted(rep.Changed), []string{"inner", "outer"}) || rep.Changed["outer"].Group != "g:inner" {
		t.Errorf("after the append the target reported %+v, want inner and outer in one group", rep.Changed)
	}

	t.Run("hash mismatch loads nothing", func(t *testing.T) {
		src.exec("m = blob(200000)", nil)
		before := dst.k.Names()
		tr := &transfer{src: src, dst: dst, srcComm: srcComm, dstComm: dstComm, window: 1,
			tamperHash: func(h string) string { return strings.Repeat("0", len(h)) }}
		tr.run(t, "t2", []string{"m"})
		if len(tr.loaded) != 0 || len(tr.loadErrors) != 1 || !strings.Contains(tr.loadErrors[0].Error, "nothing was loaded") {
			t.Errorf("loaded %+v, errors %+v", tr.loaded, tr.loadErrors)
		}
		if after := dst.k.Names(); !slices.Equal(after, before) {
			t.Errorf("target names %v, were %v", after, before)
		}
	})
	t.Run("missing chunk loads nothing", func(t *testing.T) {
		dst.comm(dstComm, map[string]any{"op": agent.OpBegin, "id": "t3", "raw_size": 10}, nil)
		dst.comm(dstComm, map[string]any{"op": agent.OpChunk, "id": "t3", "seq": 0, "z": false, "raw": 5}, [][]byte{[]byte("hello")})
		got := dst.comm(dstComm, map[string]any{"op": agent.OpLoad, "id": "t3", "hash": "x", "chunks": 2}, nil)
		if len(got) != 1 || got[0].Op != agent.OpError || !strings.Contains(got[0].Error, "1 of 2 chunks") {
			t.Errorf("load of a partial payload: %+v", got)
		}
	})
	bad := []struct {
		name string
		data map[string]any
		bufs [][]byte
		want string
	}{
		{"chunk without buffer", map[string]any{"op": agent.OpChunk, "id": "b", "seq": 0, "raw": 1}, nil, "without its buffer"},
		{"chunk out of order", map[string]any{"op": agent.OpChunk, "id": "b", "seq": 3, "raw": 1}, [][]byte{{1}}, "was due"},
		{"chunk longer than declared", map[string]any{"op": agent.OpChunk, "id": "b", "seq": 0, "raw": 1}, [][]byte{{1, 2}}, "declares"},
		{"chunk past the size", map[string]any{"op": agent.OpChunk, "id": "b", "seq": 0, "raw": 99}, [][]byte{make([]byte, 99)}, "remain"},
		{"compressed chunk", map[string]any{"op": agent.OpChunk, "id": "b", "seq": 0, "raw": 1, "z": true}, [][]byte{{1}}, "compressed"},
		{"seq of the wrong type", map[string]any{"op": agent.OpChunk, "id": "b", "seq": "0", "raw": 1}, [][]byte{{1}}, "malformed"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			dst.comm(dstComm, map[string]any{"op": agent.OpBegin, "id": "b", "raw_size": 4}, nil)
			got := dst.comm(dstComm, c.data, c.bufs)
			if len(got) != 1 || got[0].Op != agent.OpError || !strings.Contains(got[0].Error, c.want) {
				t.Fatalf("answered %+v, want an error with %q", got, c.want)
			}
			if c.want == "malformed" {
				return // the id could not be read: nothing to connect the load to
			}
			load := dst.comm(dstComm, map[string]any{"op": agent.OpLoad, "id": "b", "hash": "", "chunks": 1}, nil)
			if len(load) != 1 || !strings.Contains(load[0].Error, "receiving failed") {
				t.Errorf("the load after it answered %+v, want why receiving failed", load)
			}
		})
	}
	t.Run("other ops", func(t *testing.T) {
		cases := []struct {
			data map[string]any
			op   string
			want string
		}{
			{map[string]any{"op": agent.OpBegin, "id": "big", "raw_size": -1}, agent.OpError, "more than this machine holds"},
			{map[string]any{"op": agent.OpMore, "id": "nope"}, agent.OpError, "no such transfer being packed"},
			{map[string]any{"op": agent.OpLoad, "id": "nope", "hash": "", "chunks": 0}, agent.OpError, "no such transfer"},
			{map[string]any{"op": "explode", "id": "x"}, agent.OpError, "unknown op"},
			{map[string]any{"op": agent.OpDelete, "id": "d", "names": []string{"n", "alias"}}, agent.OpDeleted, ""},
		}
		for _, c := range cases {
			got := dst.comm(dstComm, c.data, nil)
			if len(got) != 1 || got[0].Op != c.op || !strings.Contains(got[0].Error, c.want) {
				t.Errorf("%v answered %+v, want %s %q", c.data, got, c.op, c.want)
			}
		}
		if _, ok := dst.k.Value("n"); ok {
			t.Error("n still bound after delete")
		}
		// drop abandons a partial payload.
		dst.comm(dstComm, map[string]any{"op": agent.OpBegin, "id": "dr", "raw_size": 4}, nil)
		if got := dst.comm(dstComm, map[string]any{"op": agent.OpDrop, "id": "dr"}, nil); len(got) != 0 {
			t.Errorf("drop answered %+v", got)
		}
		if got := dst.comm(dstComm, map[string]any{"op": agent.OpLoad, "id": "dr", "hash": "", "chunks": 0}, nil); len(got) != 1 || !strings.Contains(got[0].Error, "no such transfer") {
			t.Errorf("load after drop answered %+v", got)
		}
	})
}

// TestWindowZero: window 0 sends every chunk at once, with no pause.
func TestWindowZero(t *testing.T) {
	src, dst, srcComm, dstComm := pair(t, backendtest.WithChunkSize(1000))
	src.exec("x = blob(5000)\ny = [x, x]", nil)
	tr := &transfer{src: src, dst: dst, srcComm: srcComm, dstComm: dstComm, window: 0}
	tr.run(t, "w0", []string{"y"})
	if tr.pauses != 0 || tr.chunks < 6 || tr.maxChunk > 1000 || len(tr.loaded) != 1 {
		t.Fatalf("%d pauses, %d chunks of at most %d bytes, loaded %+v, errors %+v", tr.pauses, tr.chunks, tr.maxChunk, tr.loaded, tr.loadErrors)
	}
	if got, _ := dst.k.Value("y"); !strings.HasPrefix(got, "[bytearray(b'") {
		t.Errorf("y = %.40s", got)
	}
}

// TestWrongSecret: a comm opened with another secret is closed with
// "unauthorised" and everything sent on it later is ignored.
func TestWrongSecret(t *testing.T) {
	d := started(t, location.Local)
	d.exec("x = 1", nil)
	d.install("right")
	id, r := d.open("wrong")
	closes := r.iopub("comm_close")
	if len(closes) != 1 || !strings.Contains(string(closes[0].Content), `"error":"unauthorised"`) {
		t.Fatalf("comm_open with a wrong secret answered %v", r.types())
	}
	for _, op := range []map[string]any{
		{"op": agent.OpPack, "id": "p", "names": []string{"x"}, "window": 0},
		{"op": agent.OpDelete, "id": "d", "names": []string{"x"}},
	} {
		if got := d.comm(id, op, nil); len(got) != 0 {
			t.Errorf("%v on an unauthorised comm answered %+v", op["op"], got)
		}
	}
	if _, ok := d.k.Value("x"); !ok {
		t.Error("x was deleted through an unauthorised comm")
	}
	// Before install, no comm target exists at all.
	fresh := started(t, location.Remote)
	if _, r := fresh.open("right"); len(r.iopub("comm_close")) != 1 {
		t.Errorf("comm_open before install answered %v", r.types())
	}
	ok, r := d.open("right")
	if len(r.iopub("comm_close")) != 0 {
		t.Fatal("the right secret was refused")
	}
	if got := d.comm(ok, map[string]any{"op": agent.OpDelete, "id": "d", "names": []string{"x"}}, nil); len(got) != 1 || got[0].Op != agent.OpDeleted {
		t.Errorf("delete answered %+v", got)
	}
	ci := d.do(wire.Shell, "comm_info_request", map[string]any{}, nil)
	var comms struct {
		Comms map[string]any `json:"comms"`
	}
	_ = json.Unmarshal(ci.reply.Content, &comms)
	if keys := slices.Collect(maps.Keys(comms.Comms)); len(keys) != 1 || keys[0] != ok {
		sort.Strings(keys)
		t.Errorf("comm_info lists %v, want only the authorised comm", keys)
	}
}

// TestReportSharedStructure: a value sharing one list at every level (2^40
// paths) is reported at the cost of its 40 lists.
func TestReportSharedStructure(t *testing.T) {
	d := started(t, location.Local)
	d.install("s")
	code := "l0 = [1]"
	for i := 1; i <= 40; i++ {
		code += fmt.Sprintf("\nl%d = [l%d, l%d]", i, i-1, i-1)
	}
	t0 := time.Now()
	r := d.exec(code, map[string]string{agent.ReportKey: agent.ReportExpr(nil, true, false, nil, false)})
	rep, err := agent.ParseReport(r.expr(agent.ReportKey))
	if err != nil || len(rep.Changed) != 41 || rep.Changed["l40"].Hash == "" || rep.Changed["l40"].Group != "g:l0" {
		t.Errorf("reported %d names (%v), l40 %+v", len(rep.Changed), err, rep.Changed["l40"])
	}
	if d := time.Since(t0); d > 2*time.Second {
		t.Errorf("the report took %s", d)
	}
}

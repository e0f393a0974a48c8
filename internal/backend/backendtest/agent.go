package backendtest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/ferry-nb/ferry/internal/agent"
	"github.com/ferry-nb/ferry/internal/wire"
)

// The fake's agent does what agent.py does, over the subset's objects: the
// post-cell report, and the state comm's pack/load protocol with windows
// of chunks and agent.py's SHA-256 tree hash. The payload is JSON (an
// arena of objects, so aliases and shared objects stay one object after a
// load); its format is the fake's own.

const commTarget = agent.CommTarget

// treeTag starts the payload hash, as agent.py's TREE_TAG.
const treeTag = "ferry-tree-sha256-1"

// maxPayload bounds what a target accepts (agent.py: the machine's memory).
const maxPayload = 1 << 31

const payloadFormat = "ferry-fake-payload-1"

// fingerprint is what the report remembers of a name: identity, type,
// shallow signature, content hash.
type fingerprint struct {
	obj     *object
	kind    kind
	shallow int
	hash    string
}

func fingerprintOf(o *object) fingerprint {
	return fingerprint{obj: o, kind: o.kind, shallow: len(o.items), hash: contentHash(o)}
}

func (f fingerprint) sameObject(o *object) bool {
	return f.obj == o && f.kind == o.kind && f.shallow == len(o.items)
}

type agentState struct {
	installed bool
	secret    string
	prints    map[string]fingerprint
	comms     map[string]bool // comm id -> authorised
	out       *outgoing       // the one unfinished pack
	in        map[string]*incoming
	failed    map[string]string // transfer id -> why receiving it failed
}

func newAgentState() agentState {
	return agentState{prints: map[string]fingerprint{}, comms: map[string]bool{}, in: map[string]*incoming{}, failed: map[string]string{}}
}

// isInstall recognises agent.InstallCode by its content.
func isInstall(code string) bool {
	return strings.Contains(code, "_ferry_agent") && strings.Contains(code, ".install(")
}

// install registers the secret and fingerprints the namespace, as
// agent.install does; the secret is install()'s quoted argument.
func (inc *incarnation) install(code string) error {
	rest := code[strings.LastIndex(code, ".install(")+len(".install("):]
	q, err := strconv.QuotedPrefix(rest)
	if err != nil {
		return raise("SyntaxError", "install() without a quoted secret")
	}
	secret, err := strconv.Unquote(q)
	if err != nil {
		return raise("SyntaxError", "install() without a quoted secret")
	}
	inc.agent.installed, inc.agent.secret = true, secret
	inc.agent.prints = map[string]fingerprint{}
	for n, o := range inc.ns {
		inc.agent.prints[n] = fingerprintOf(o)
	}
	return nil
}

// ---------------------------------------------------------------- fingerprints

// contentHash is the value's SHA-256 in hex: of its bytes for a bytearray,
// of a type tag and its text for an int or str, over its items' hashes for
// a list. It is "" for a file or anything holding one (a value that cannot
// be serialised), which the report treats as "changed whenever checked".
func contentHash(o *object) string {
	h, ok := hashOf(o, map[*object]bool{}, map[*object][32]byte{})
	if !ok {
		return ""
	}
	return hex.EncodeToString(h[:])
}

// hashOf hashes o; done memoises shared objects, so a value sharing one
// list many times over costs each list once.
func hashOf(o *object, open map[*object]bool, done map[*object][32]byte) ([32]byte, bool) {
	switch o.kind {
	case kBytes:
		return sha256.Sum256(o.b), true
	case kInt:
		return sha256.Sum256([]byte("int:" + strconv.FormatInt(o.i, 10))), true
	case kStr:
		return sha256.Sum256([]byte("str:" + o.s)), true
	case kNone:
		return sha256.Sum256([]byte("None")), true
	case kList:
		if h, ok := done[o]; ok {
			return h, true
		}
		if open[o] {
			return sha256.Sum256([]byte("cycle")), true
		}
		open[o] = true
		defer delete(open, o)
		h := sha256.New()
		h.Write([]byte("list:"))
		for _, it := range o.items {
			ih, ok := hashOf(it, open, done)
			if !ok {
				return [32]byte{}, false
			}
			h.Write(ih[:])
		}
		var out [32]byte
		h.Sum(out[:0])
		done[o] = out
		return out, true
	}
	return [32]byte{}, false
}

// size approximates the value's bytes: what Ferry's cost model reads.
func size(o *object) int64 {
	switch o.kind {
	case kStr:
		return int64(len(o.s))
	case kBytes:
		return int64(len(o.b))
	case kList:
		n := int64(8 * len(o.items))
		for _, it := range o.items {
			if it != o {
				n += min(size1(it), math.MaxInt32)
			}
		}
		return n
	}
	return 8
}

// size1 is size one level deep, so cycles and deep nests stay cheap.
func size1(o *object) int64 {
	if o.kind == kList {
		return int64(8 * len(o.items))
	}
	return size(o)
}

// unmovable says why o cannot move, or "".
func unmovable(o *object) string {
	if o.kind == kFile {
		return "open file"
	}
	var walk func(o *object, path string, seen map[*object]bool) string
	walk = func(o *object, path string, seen map[*object]bool) string {
		if seen[o] {
			return ""
		}
		seen[o] = true
		for i, it := range o.items {
			p := path + "[" + strconv.Itoa(i) + "]"
			if it.kind == kFile {
				return "holds an open file (at " + p + ")"
			}
			if why := walk(it, p, seen); why != "" {
				return why
			}
		}
		return ""
	}
	return walk(o, "", map[*object]bool{})
}

// reach is the set of non-atomic objects o holds (itself included): names
// whose sets meet share an object and must move together.
func reach(o *object) map[*object]bool {
	out := map[*object]bool{}
	stack := []*object{o}
	for len(stack) > 0 && len(out) < 2000 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x.atomic() || out[x] {
			continue
		}
		out[x] = true
		stack = append(stack, x.items...)
	}
	return out
}

// parseReportArgs reads report()'s arguments: a JSON list, True or False
// for dynamic, then (ignored: a fake kernel has no process state, and
// hashes everything at once, so sharing and full hashing change nothing)
// True or False for proc, a JSON list of shared names and True or False
// for full.
func parseReportArgs(args string) (map[string]bool, bool, error) {
	dec := json.NewDecoder(strings.NewReader(args))
	var names []string
	if err := dec.Decode(&names); err != nil {
		return nil, false, raise("SyntaxError", "report() names: %v", err)
	}
	// dynamic; then proc, shared, full and the module attributes, all
	// ignored: a fake kernel has no process state and hashes at once.
	flags := strings.Split(strings.TrimPrefix(strings.TrimSpace(args[dec.InputOffset():]), ","), ",")
	if len(flags) < 1 {
		return nil, false, raise("TypeError", "report() takes names, dynamic, proc, shared, full and attrs")
	}
	var dynamic bool
	switch strings.TrimSpace(flags[0]) {
	case "True":
		dynamic = true
	case "False":
	default:
		return nil, false, raise("SyntaxError", "report() dynamic must be True or False")
	}
	maybe := make(map[string]bool, len(names))
	for _, n := range names {
		maybe[n] = true
	}
	return maybe, dynamic, nil
}

// report is agent.report's JSON: names new, rebound or changed (contents
// are compared only for maybe names, or all if dynamic), deleted names,
// and alias groups.
func (inc *incarnation) report(maybe map[string]bool, dynamic bool) string {
	prints := inc.agent.prints
	changed := map[string]agent.Change{}
	deleted := []string{}
	for n := range prints {
		if _, ok := inc.ns[n]; !ok {
			deleted = append(deleted, n)
			delete(prints, n)
		}
	}
	sort.Strings(deleted)
	for n, o := range inc.ns {
		old, had := prints[n]
		if had && old.sameObject(o) && !dynamic && !maybe[n] {
			continue // same object, and the cell is not known to touch it
		}
		fp := fingerprintOf(o)
		prints[n] = fp
		if had && old.obj == o && old.kind == fp.kind && fp.hash != "" && fp.hash == old.hash {
			continue
		}
		changed[n] = describe(o, fp)
	}
	if len(changed) > 0 {
		groups := inc.aliasGroups(changed)
		touched := map[string]bool{}
		for n, g := range groups {
			if ch, ok := changed[n]; ok {
				ch.Group = g
				changed[n] = ch
				touched[g] = true
			}
		}
		// A mutation through an alias changes the other names too.
		for n, g := range groups {
			if _, ok := changed[n]; !ok && touched[g] {
				o := inc.ns[n]
				fp := fingerprintOf(o)
				prints[n] = fp
				ch := describe(o, fp)
				ch.Group = g
				changed[n] = ch
			}
		}
	}
	rep := map[string]any{"changed": changed, "deleted": deleted}
	if len(inc.cellEffects) > 0 {
		rep["effects"] = inc.cellEffects
		inc.cellEffects = nil
	}
	b, _ := json.Marshal(rep)
	return string(b)
}

func describe(o *object, fp fingerprint) agent.Change {
	why := unmovable(o)
	return agent.Change{Size: size(o), Hash: fp.hash, Kind: o.kind.String(), Movable: why == "", Reason: why}
}

// aliasGroups labels the names connected to the changed ones by shared
// objects "g:" + the first of them; names alone get no label.
func (inc *incarnation) aliasGroups(changed map[string]agent.Change) map[string]string {
	reaches := map[string]map[*object]bool{}
	var live []string
	for n, o := range inc.ns {
		if r := reach(o); len(r) > 0 {
			reaches[n] = r
			live = append(live, n)
		}
	}
	sort.Strings(live)
	meets := func(a, b map[*object]bool) bool {
		for o := range a {
			if b[o] {
				return true
			}
		}
		return false
	}
	out, done := map[string]string{}, map[string]bool{}
	var starts []string
	for n := range changed {
		starts = append(starts, n)
	}
	sort.Strings(starts)
	for _, c := range starts {
		if done[c] || reaches[c] == nil {
			continue
		}
		comp, todo := map[string]bool{c: true}, []string{c}
		for len(todo) > 0 {
			x := reaches[todo[len(todo)-1]]
			todo = todo[:len(todo)-1]
			for _, n := range live {
				if !comp[n] && meets(x, reaches[n]) {
					comp[n] = true
					todo = append(todo, n)
				}
			}
		}
		first := c
		for m := range comp {
			done[m] = true
			first = min(first, m)
		}
		if len(comp) > 1 {
			for m := range comp {
				out[m] = "g:" + first
			}
		}
	}
	return out
}

// dumpSize answers agent.DumpSessionExpr: the whole namespace's payload.
func (inc *incarnation) dumpSize() string {
	names := make([]string, 0, len(inc.ns))
	for n := range inc.ns {
		names = append(names, n)
	}
	data, _, _ := inc.pack(names)
	b, _ := json.Marshal(map[string]any{"bytes": len(data), "seconds": 0.0, "error": ""})
	return string(b)
}

// ---------------------------------------------------------------- payload

type payload struct {
	Format  string         `json:"format"`
	Names   map[string]int `json:"names"`
	Objects []pobject      `json:"objects"`
}

type pobject struct {
	Kind  string `json:"kind"`
	I     int64  `json:"i,omitempty"`
	S     string `json:"s,omitempty"`
	B     []byte `json:"b,omitempty"`
	Items []int  `json:"items,omitempty"`
}

// pack serialises names (those bound and movable) into one payload; it
// returns the payload, the packed names and why the others cannot move.
func (inc *incarnation) pack(names []string) ([]byte, []string, map[string]string) {
	p := payload{Format: payloadFormat, Names: map[string]int{}}
	index := map[*object]int{}
	var add func(o *object) int
	add = func(o *object) int {
		if i, ok := index[o]; ok {
			return i
		}
		i := len(p.Objects)
		index[o] = i
		p.Objects = append(p.Objects, pobject{Kind: o.kind.String(), I: o.i, S: o.s, B: o.b})
		items := make([]int, len(o.items))
		for j, it := range o.items {
			items[j] = add(it)
		}
		p.Objects[i].Items = items
		return i
	}
	unmov := map[string]string{}
	packed := []string{}
	for _, n := range names {
		o, ok := inc.ns[n]
		if !ok {
			continue
		}
		if why := unmovable(o); why != "" {
			unmov[n] = why
			continue
		}
		p.Names[n] = add(o)
		packed = append(packed, n)
	}
	sort.Strings(packed)
	data, _ := json.Marshal(p)
	return data, packed, unmov
}

// unpack is pack's inverse; it checks every index, so a malformed payload
// is an error, never a panic.
func unpack(data []byte) (map[string]*object, error) {
	var p payload
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("not a payload: %w", err)
	}
	if p.Format != payloadFormat {
		return nil, fmt.Errorf("payload format %q, want %q", p.Format, payloadFormat)
	}
	objs := make([]*object, len(p.Objects))
	for i, po := range p.Objects {
		k, ok := kindOf(po.Kind)
		if !ok || k == kFile {
			return nil, fmt.Errorf("object %d: kind %q cannot be loaded", i, po.Kind)
		}
		objs[i] = &object{kind: k, i: po.I, s: po.S, b: po.B}
		if k == kNone {
			objs[i] = none
		}
	}
	for i, po := range p.Objects {
		for _, j := range po.Items {
			if j < 0 || j >= len(objs) {
				return nil, fmt.Errorf("object %d holds object %d of %d", i, j, len(objs))
			}
			objs[i].items = append(objs[i].items, objs[j])
		}
	}
	out := make(map[string]*object, len(p.Names))
	for n, j := range p.Names {
		if j < 0 || j >= len(objs) {
			return nil, fmt.Errorf("%s is object %d of %d", n, j, len(objs))
		}
		out[n] = objs[j]
	}
	return out, nil
}

// treeHash is agent.py's payload hash over the chunks as sent.
type treeHash struct{ parts [][32]byte }

func (t *treeHash) add(chunk []byte) { t.parts = append(t.parts, sha256.Sum256(chunk)) }

func (t *treeHash) hex() string {
	h := sha256.New()
	h.Write([]byte(treeTag))
	for _, p := range t.parts {
		h.Write([]byte("r"))
		h.Write(p[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ---------------------------------------------------------------- comm

// outgoing is a payload being sent in windows.
type outgoing struct {
	id        string
	data      []byte
	off, seq  int
	window    int
	names     []string
	unmovable map[string]string
	hash      treeHash
}

// incoming is a payload being received.
type incoming struct {
	blob    []byte
	rawSize int
	n       int
	hash    treeHash
}

type commData struct {
	Op      string   `json:"op"`
	ID      string   `json:"id"`
	Names   []string `json:"names"`
	Window  int      `json:"window"`
	Seq     *int     `json:"seq"`
	Raw     *int     `json:"raw"`
	Z       bool     `json:"z"`
	RawSize *int     `json:"raw_size"`
	Hash    string   `json:"hash"`
	Chunks  int      `json:"chunks"`
}

// comm handles comm_open, comm_msg and comm_close with the lock held.
func (inc *incarnation) comm(o *out) {
	var c struct {
		ID     string          `json:"comm_id"`
		Target string          `json:"target_name"`
		Data   json.RawMessage `json:"data"`
	}
	if o.req.Decode(&c) != nil {
		return // ipykernel logs a malformed comm message and goes on
	}
	a := &inc.agent
	switch o.req.Header.MsgType {
	case "comm_open":
		if c.Target != commTarget || !a.installed {
			o.iopub("comm_close", map[string]any{"comm_id": c.ID, "data": map[string]any{}})
			return
		}
		var d struct {
			Secret string `json:"secret"`
		}
		_ = json.Unmarshal(c.Data, &d)
		if !hmac.Equal([]byte(d.Secret), []byte(a.secret)) {
			a.comms[c.ID] = false
			o.iopub("comm_close", map[string]any{"comm_id": c.ID, "data": map[string]string{"error": "unauthorised"}})
			return
		}
		a.comms[c.ID] = true
	case "comm_close":
		delete(a.comms, c.ID)
	case "comm_msg":
		if !a.comms[c.ID] {
			return // unknown or unauthorised: ignored
		}
		send := func(data map[string]any, buffers [][]byte) {
			o.add(wire.IOPub, "comm_msg", map[string]any{"comm_id": c.ID, "data": data}, buffers)
		}
		var d commData
		if err := json.Unmarshal(c.Data, &d); err != nil {
			send(map[string]any{"op": agent.OpError, "id": nil, "error": "malformed message: " + err.Error()}, nil)
			return
		}
		if err := inc.handleOp(d, o.req.Buffers, send); err != nil {
			if d.Op == agent.OpBegin || d.Op == agent.OpChunk {
				if _, ok := a.failed[d.ID]; !ok {
					a.failed[d.ID] = err.Error()
				}
			}
			send(map[string]any{"op": agent.OpError, "id": d.ID, "error": err.Error()}, nil)
		}
	}
}

// handleOp is agent.py's _handle: one op of the state comm.
func (inc *incarnation) handleOp(d commData, buffers [][]byte, send func(map[string]any, [][]byte)) error {
	a := &inc.agent
	switch d.Op {
	case agent.OpPack:
		data, names, unmov := inc.pack(d.Names)
		a.out = &outgoing{id: d.ID, data: data, window: max(d.Window, 0), names: names, unmovable: unmov}
		send(map[string]any{"op": agent.OpBegin, "id": d.ID, "raw_size": len(data)}, nil)
		inc.sendWindow(send)
	case agent.OpMore:
		if a.out == nil || a.out.id != d.ID {
			return fmt.Errorf("no such transfer being packed")
		}
		inc.sendWindow(send)
	case agent.OpBegin:
		delete(a.in, d.ID)
		delete(a.failed, d.ID)
		if d.RawSize == nil || *d.RawSize < 0 || *d.RawSize > maxPayload {
			return fmt.Errorf("payload size %v is more than this machine holds; nothing will be loaded", d.RawSize)
		}
		// Room for the declared size up to a bound: a bogus size costs nothing.
		a.in[d.ID] = &incoming{rawSize: *d.RawSize, blob: make([]byte, 0, min(*d.RawSize, 64<<20))}
	case agent.OpChunk:
		in, ok := a.in[d.ID]
		delete(a.in, d.ID) // a bad chunk drops the transfer
		switch {
		case !ok:
			return fmt.Errorf("chunk without a begun transfer")
		case len(buffers) == 0:
			return fmt.Errorf("chunk without its buffer")
		case d.Seq == nil || *d.Seq != in.n:
			return fmt.Errorf("chunk %v arrived where chunk %d was due", d.Seq, in.n)
		case d.Z:
			return fmt.Errorf("the fake agent takes no compressed chunks")
		case d.Raw == nil || *d.Raw < 0 || *d.Raw > in.rawSize-len(in.blob) || *d.Raw != len(buffers[0]):
			return fmt.Errorf("chunk %d declares %v bytes, has %d where %d remain", in.n, d.Raw, len(buffers[0]), in.rawSize-len(in.blob))
		}
		in.hash.add(buffers[0])
		in.blob = append(in.blob, buffers[0]...)
		in.n++
		a.in[d.ID] = in
	case agent.OpLoad:
		in, ok := a.in[d.ID]
		delete(a.in, d.ID)
		if !ok {
			if why, failed := a.failed[d.ID]; failed {
				delete(a.failed, d.ID)
				return fmt.Errorf("receiving failed (%s); nothing was loaded", why)
			}
			return fmt.Errorf("no such transfer; nothing was loaded")
		}
		got := in.hash.hex()
		if in.n != d.Chunks || len(in.blob) != in.rawSize || !hmac.Equal([]byte(got), []byte(d.Hash)) {
			return fmt.Errorf("payload hash mismatch (%d of %d chunks); nothing was loaded", in.n, d.Chunks)
		}
		vals, err := unpack(in.blob)
		if err != nil {
			return fmt.Errorf("%v; nothing was loaded", err)
		}
		names := make([]string, 0, len(vals))
		for n, o := range vals {
			inc.ns[n] = o
			a.prints[n] = fingerprintOf(o)
			names = append(names, n)
		}
		sort.Strings(names)
		send(map[string]any{"op": agent.OpLoaded, "id": d.ID, "hash": got, "names": names}, nil)
	case agent.OpDrop:
		delete(a.in, d.ID)
		if a.out != nil && a.out.id == d.ID {
			a.out = nil
		}
	case agent.OpDelete:
		for _, n := range d.Names {
			delete(inc.ns, n)
			delete(a.prints, n)
		}
		send(map[string]any{"op": agent.OpDeleted, "id": d.ID}, nil)
	default:
		return fmt.Errorf("unknown op %q", d.Op)
	}
	return nil
}

// sendWindow sends the next window of chunks, then paused, or the rest
// and packed.
func (inc *incarnation) sendWindow(send func(map[string]any, [][]byte)) {
	out, size := inc.agent.out, inc.k.chunkSize
	for n := 0; out.off < len(out.data); n++ {
		if out.window > 0 && n == out.window {
			send(map[string]any{"op": agent.OpPaused, "id": out.id, "seq": out.seq}, nil)
			return
		}
		chunk := out.data[out.off:min(out.off+size, len(out.data))]
		out.hash.add(chunk)
		send(map[string]any{"op": agent.OpChunk, "id": out.id, "seq": out.seq, "z": false, "raw": len(chunk)}, [][]byte{chunk})
		out.off += len(chunk)
		out.seq++
	}
	inc.agent.out = nil
	unmov := out.unmovable
	send(map[string]any{"op": agent.OpPacked, "id": out.id, "hash": out.hash.hex(), "size": len(out.data), "raw_size": len(out.data),
		"chunks": out.seq, "names": out.names, "unmovable": unmov, "seconds": 0.0}, nil)
}

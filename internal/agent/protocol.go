package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/ferry-nb/ferry/internal/wire"
)

// ProtocolVersion is the version of the comm protocol and report format
// between Ferry and its agent. agent.py's PROTOCOL must equal it; Ferry
// checks the installed agent's at install (ProtocolKey), so an agent left
// in a kernel by another Ferry build is never spoken to in the wrong
// dialect. Bump both together when a message changes shape.
const ProtocolVersion = 6

// ProtocolKey is the user_expressions key of the install request that
// returns the installed agent's PROTOCOL.
const ProtocolKey = "__ferry_protocol__"

// ProtocolExpr evaluates to the installed agent's protocol version.
const ProtocolExpr = `__import__("_ferry_agent").PROTOCOL`

// Ops of the state comm (agent.py's docstring describes each message).
const (
	OpPack    = "pack"    // Ferry -> source: serialise names, send in windows
	OpMore    = "more"    // Ferry -> source: send the next window
	OpBegin   = "begin"   // source -> Ferry -> target: a payload starts
	OpChunk   = "chunk"   // source -> Ferry -> target: one chunk, one buffer
	OpPaused  = "paused"  // source -> Ferry: a window was sent
	OpPacked  = "packed"  // source -> Ferry: the payload's hash and size
	OpLoad    = "load"    // Ferry -> target: check the hash, then unpickle
	OpLoaded  = "loaded"  // target -> Ferry: loaded, with the hash it saw
	OpDrop    = "drop"    // Ferry -> target: abandon a partial payload
	OpDelete  = "delete"  // Ferry -> agent: delete names
	OpDeleted = "deleted" // agent -> Ferry: deleted
	OpError   = "error"   // agent -> Ferry: the op failed; nothing changed
)

// Msg is one message on the state comm, either way. Fields unused by an op
// are zero.
type Msg struct {
	Op        string            `json:"op"`
	ID        string            `json:"id"`
	Seq       int               `json:"seq"`
	Hash      string            `json:"hash"`
	Size      int64             `json:"size"`
	Chunks    int               `json:"chunks"`
	Names     []string          `json:"names"`
	Unmovable map[string]string `json:"unmovable"`
	// Notes are what the target said while loading: warnings its
	// libraries raised (a model pickled by another version) and settings
	// it could not apply. Ferry shows them in the cell.
	Notes   []string `json:"notes"`
	Error   string   `json:"error"`
	Seconds float64  `json:"seconds"`
	RawSize int64    `json:"raw_size"`
	// Raw is a chunk's size before compression (its share of RawSize).
	Raw int64 `json:"raw"`
}

// CommData reads an agent message from an IOPub comm_msg, returning its
// raw data too so Ferry can forward it unchanged. ok is false for any
// other message.
func CommData(m *wire.Message) (Msg, json.RawMessage, bool) {
	if m.Header.MsgType != "comm_msg" {
		return Msg{}, nil, false
	}
	var c struct {
		Data json.RawMessage `json:"data"`
	}
	var d Msg
	if m.Decode(&c) != nil || json.Unmarshal(c.Data, &d) != nil {
		return Msg{}, nil, false
	}
	return d, c.Data, true
}

// ParseBundle returns the text/plain of a user_expressions result, or the
// error the expression raised.
func ParseBundle(raw json.RawMessage) (string, error) {
	var bundle struct {
		Status string `json:"status"`
		EName  string `json:"ename"`
		EValue string `json:"evalue"`
		Data   struct {
			Text string `json:"text/plain"`
		} `json:"data"`
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		return "", err
	}
	switch bundle.Status {
	case "ok":
	case "":
		return "", errors.New("user_expressions result without a status")
	default:
		return "", fmt.Errorf("%s: %s", bundle.EName, bundle.EValue)
	}
	return bundle.Data.Text, nil
}

// ParseReport reads the post-cell report from its user_expressions entry
// (a mime bundle whose text/plain is the report's JSON).
func ParseReport(raw json.RawMessage) (Report, error) {
	var rep Report
	if len(raw) == 0 {
		return rep, errors.New("no report")
	}
	text, err := ParseBundle(raw)
	if err != nil {
		return rep, err
	}
	// Entries decode as pointers so a null one is told from an empty one.
	var r struct {
		Changed map[string]*Change `json:"changed"`
		Deleted []string           `json:"deleted"`
		Error   string             `json:"error"`
		Reads   []string           `json:"reads"`
		Lists   []string           `json:"lists"`
		Effects []string           `json:"effects"`
		Imports map[string]string  `json:"imports"`
		Hashes  map[string]string  `json:"hashes"`
	}
	if err := json.Unmarshal([]byte(text), &r); err != nil {
		return rep, fmt.Errorf("malformed report: %w", err)
	}
	if r.Error != "" {
		return rep, errors.New(r.Error)
	}
	// The agent always sends "changed", and a full entry per name: anything
	// less is not a report of "nothing changed".
	if r.Changed == nil {
		return rep, errors.New("malformed report: no \"changed\" map")
	}
	rep.Changed, rep.Deleted = make(map[string]Change, len(r.Changed)), r.Deleted
	rep.Reads, rep.Lists, rep.Effects, rep.Imports, rep.Hashes = r.Reads, r.Lists, r.Effects, r.Imports, r.Hashes
	for n, ch := range r.Changed {
		if ch == nil {
			return Report{}, fmt.Errorf("malformed report: %q is described by null, not an object", n)
		}
		rep.Changed[n] = *ch
	}
	return rep, nil
}

// ErrProtocol is returned when the installed agent speaks another
// protocol version than this Ferry.
var ErrProtocol = errors.New("agent protocol mismatch")

// CheckProtocol reads the install request's ProtocolKey result.
func CheckProtocol(raw json.RawMessage) error {
	text, err := ParseBundle(raw)
	if err != nil {
		return fmt.Errorf("%w: asking the agent its version: %v", ErrProtocol, err)
	}
	v, err := strconv.Atoi(text)
	if err != nil || v != ProtocolVersion {
		return fmt.Errorf("%w: the kernel's agent speaks version %q, this Ferry %d; restart the kernel so Ferry installs its own", ErrProtocol, text, ProtocolVersion)
	}
	return nil
}

// ParseInfo reads the install request's InfoKey result.
func ParseInfo(raw json.RawMessage) (Info, error) {
	var info Info
	text, err := ParseBundle(raw)
	if err != nil {
		return info, err
	}
	if err := json.Unmarshal([]byte(text), &info); err != nil {
		return info, fmt.Errorf("malformed agent info: %w", err)
	}
	return info, nil
}

// ParseHashes decodes the answer to HashesExpr.
func ParseHashes(raw json.RawMessage) (map[string]string, error) {
	text, err := ParseBundle(raw)
	if err != nil {
		return nil, err
	}
	var h map[string]string
	if err := json.Unmarshal([]byte(text), &h); err != nil {
		return nil, fmt.Errorf("malformed hashes: %w", err)
	}
	return h, nil
}

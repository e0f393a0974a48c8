// Package wire holds the Jupyter messaging protocol as it travels over
// ZeroMQ: connection files, HMAC signing, the multipart frame codec and the
// sockets that carry it. It knows nothing about routing; the kernel and
// backend packages decide where a message goes.
package wire

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// ProtocolVersion is the messaging protocol version Ferry speaks.
const ProtocolVersion = "5.3"

// Delimiter separates routing identities from the signed message frames.
var Delimiter = []byte("<IDS|MSG>")

// Header is a message header. Fields Ferry does not know are kept in Extra
// and written back unchanged, so newer protocol fields pass through.
type Header struct {
	MsgID    string `json:"msg_id"`
	Session  string `json:"session"`
	Username string `json:"username"`
	Date     string `json:"date"`
	MsgType  string `json:"msg_type"`
	Version  string `json:"version"`
	// Extra holds header fields beyond the ones above (e.g. subshell_id).
	Extra map[string]json.RawMessage `json:"-"`
}

var knownHeaderFields = map[string]bool{"msg_id": true, "session": true, "username": true, "date": true, "msg_type": true, "version": true}

// UnmarshalJSON reads a header, keeping unknown fields. Jupyter allows
// non-string dates only from broken peers; those are rejected as malformed.
func (h *Header) UnmarshalJSON(b []byte) error {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return err
	}
	if all == nil {
		return errors.New("header is null")
	}
	str := func(k string) (string, error) {
		raw, ok := all[k]
		if !ok || string(raw) == "null" {
			return "", nil
		}
		if plain(raw) {
			return string(raw[1 : len(raw)-1]), nil
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("header field %q is not a string", k)
		}
		return s, nil
	}
	var err error
	for _, f := range [...]struct {
		k   string
		dst *string
	}{{"msg_id", &h.MsgID}, {"session", &h.Session}, {"username", &h.Username}, {"date", &h.Date}, {"msg_type", &h.MsgType}, {"version", &h.Version}} {
		if *f.dst, err = str(f.k); err != nil {
			return err
		}
	}
	h.Extra = nil
	for k, v := range all {
		if !knownHeaderFields[k] {
			if h.Extra == nil {
				h.Extra = map[string]json.RawMessage{}
			}
			h.Extra[k] = v
		}
	}
	return nil
}

// plain reports whether raw is a JSON string needing no unescaping.
func plain(raw []byte) bool {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return false
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 {
			return false
		}
	}
	return true
}

// appendString appends s as a JSON string.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// MarshalJSON writes the header with its extra fields. Without extra
// fields (every header Ferry makes) it is written by hand: json.Marshal of
// a map sorted and reflected its way through six strings on every message
// relayed.
func (h Header) MarshalJSON() ([]byte, error) {
	if len(h.Extra) == 0 {
		b := make([]byte, 0, 64+len(h.MsgID)+len(h.Session)+len(h.Username)+len(h.Date)+len(h.MsgType)+len(h.Version))
		b = append(b, `{"msg_id":`...)
		b = appendString(b, h.MsgID)
		b = append(b, `,"session":`...)
		b = appendString(b, h.Session)
		b = append(b, `,"username":`...)
		b = appendString(b, h.Username)
		b = append(b, `,"date":`...)
		b = appendString(b, h.Date)
		b = append(b, `,"msg_type":`...)
		b = appendString(b, h.MsgType)
		b = append(b, `,"version":`...)
		b = appendString(b, h.Version)
		return append(b, '}'), nil
	}
	m := make(map[string]any, 6+len(h.Extra))
	for k, v := range h.Extra {
		m[k] = v
	}
	m["msg_id"], m["session"], m["username"] = h.MsgID, h.Session, h.Username
	m["date"], m["msg_type"], m["version"] = h.Date, h.MsgType, h.Version
	return json.Marshal(m)
}

// Message is one Jupyter message. Parent, Metadata and Content stay raw JSON
// so that relaying a message never rewrites what Ferry does not own.
type Message struct {
	Identities [][]byte
	Header     Header
	Parent     json.RawMessage
	Metadata   json.RawMessage
	Content    json.RawMessage
	Buffers    [][]byte
	// rawHeader is the header frame as Decode received it: HeaderJSON
	// (another message's parent) passes it on as it came instead of
	// encoding it again for every message relayed under it. A decoded
	// message's Header is therefore never changed; relays build new ones.
	rawHeader []byte
}

// NewID returns a random message or session id in the uuid4 hex form
// jupyter_client uses.
func NewID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	s := hex.EncodeToString(b[:])
	return s[:8] + "-" + s[8:12] + "-" + s[12:16] + "-" + s[16:20] + "-" + s[20:]
}

// Now formats the current time as Jupyter's ISO 8601 date.
func Now() string { return time.Now().UTC().Format("2006-01-02T15:04:05.000000Z") }

// NewHeader makes a fresh header for a message Ferry originates.
func NewHeader(msgType, session, username string) Header {
	return Header{MsgID: NewID(), Session: session, Username: username, Date: Now(), MsgType: msgType, Version: ProtocolVersion}
}

// New builds a message with a fresh header. content may be any JSON-encodable
// value or a json.RawMessage.
func New(msgType, session, username string, parent json.RawMessage, content any) (*Message, error) {
	raw, err := toRaw(content)
	if err != nil {
		return nil, fmt.Errorf("encoding %s content: %w", msgType, err)
	}
	if len(parent) == 0 {
		parent = json.RawMessage("{}")
	}
	return &Message{Header: NewHeader(msgType, session, username), Parent: parent, Metadata: json.RawMessage("{}"), Content: raw}, nil
}

func toRaw(v any) (json.RawMessage, error) {
	switch c := v.(type) {
	case nil:
		return json.RawMessage("{}"), nil
	case json.RawMessage:
		return c, nil
	case []byte:
		return json.RawMessage(c), nil
	}
	b, err := json.Marshal(v)
	return json.RawMessage(b), err
}

// ParentID returns the msg_id of the parent header, or "" if there is none.
func (m *Message) ParentID() string {
	var p struct {
		MsgID string `json:"msg_id"`
	}
	if len(m.Parent) == 0 || json.Unmarshal(m.Parent, &p) != nil {
		return ""
	}
	return p.MsgID
}

// HeaderJSON returns the header encoded as JSON, for use as another
// message's parent.
func (m *Message) HeaderJSON() json.RawMessage {
	if m.rawHeader != nil {
		return m.rawHeader
	}
	b, _ := m.Header.MarshalJSON()
	return b
}

// Decode reads Content into v.
func (m *Message) Decode(v any) error {
	if err := json.Unmarshal(m.Content, v); err != nil {
		return fmt.Errorf("malformed %s content: %w", m.Header.MsgType, err)
	}
	return nil
}

// isObject reports whether b looks like a JSON object (the protocol
// requires the parent header, metadata and content to be dicts). It checks
// the braces only: every part Ferry reads is parsed with its errors
// handled where it is read, and what it relays verbatim came from an
// authenticated peer, so a full validation pass over a multi-megabyte
// output on every hop would only cost time.
func isObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) >= 2 && b[0] == '{' && b[len(b)-1] == '}'
}

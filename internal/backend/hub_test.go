package backend

import (
	"strings"
	"testing"
)

// The spawn progress stream as JupyterHub 3 sends it (text/event-stream,
// one "data: {json}" line per event, a blank line between): parsing only;
// TestHubBackend (hub_integration_test.go) runs against a real hub.
func TestReadProgress(t *testing.T) {
	stream := "data: {\"progress\": 0, \"message\": \"Server requested\"}\n\n" +
		": keepalive\n\n" +
		"data: {\"progress\": 50, \"message\": \"Spawning server...\"}\n\n" +
		"data: {\"progress\": 100, \"ready\": true, \"message\": \"Server ready at /user/ann/\", \"url\": \"/user/ann/\"}\n\n" +
		"data: {\"progress\": 100, \"message\": \"never read\"}\n\n"
	var msgs []string
	var last ProgressEvent
	if err := ReadProgress(strings.NewReader(stream), func(ev ProgressEvent) bool {
		msgs = append(msgs, ev.Message)
		last = ev
		return !ev.Ready && !ev.Failed
	}); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 3 || !last.Ready || last.URL != "/user/ann/" {
		t.Fatalf("events %q, last %+v", msgs, last)
	}
}

func TestHubServerURL(t *testing.T) {
	h := &Hub{URL: "http://127.0.0.1:8000/"}
	if got := h.serverURL("/user/ann/"); got != "http://127.0.0.1:8000/user/ann" {
		t.Fatalf("serverURL = %q", got)
	}
	h.Server = "gpu"
	if got := h.serverPath("ann"); got != "/hub/api/users/ann/servers/gpu" {
		t.Fatalf("serverPath = %q", got)
	}
}

package kernel

import (
	"encoding/json"
	"reflect"
	"testing"
)

// setCount splices the top-level count in place and agrees with decoding
// and encoding the content: nested keys, strings holding the key and
// spacing never confuse it.
func TestSetCount(t *testing.T) {
	for _, c := range []string{
		`{"status":"ok","execution_count":3,"user_expressions":{}}`,
		`{"execution_count": null}`,
		`{"code":"\"execution_count\": 1","execution_count" : 12 ,"x":1}`,
		`{"data":{"execution_count":5},"execution_count":7}`,
		`{"a":["execution_count",{"execution_count":1}],"execution_count":-1}`,
		`{"s":"a\\\"b","execution_count":2}`,
		`{"no":1}`,
		`{"execution_count":"weird"}`,
		`not json`,
	} {
		got := setCount(json.RawMessage(c), 42)
		var m map[string]json.RawMessage
		if json.Unmarshal([]byte(c), &m) != nil {
			if string(got) != c {
				t.Errorf("%s: not JSON, changed to %s", c, got)
			}
			continue
		}
		if _, ok := m["execution_count"]; ok {
			m["execution_count"] = json.RawMessage("42")
		}
		var want, have map[string]any
		b, _ := json.Marshal(m)
		_ = json.Unmarshal(b, &want)
		if err := json.Unmarshal(got, &have); err != nil || !reflect.DeepEqual(want, have) {
			t.Errorf("%s: got %s, want %s", c, got, b)
		}
	}
}

package kernel

import (
	"reflect"
	"testing"
)

// historyWants names the results a cell needs moved: _ the newest, __ and
// ___ the ones before, Out and _oh all of them, _n only if cell n had one.
func TestHistoryWants(t *testing.T) {
	results := []int{1, 3, 4, 7}
	for _, c := range []struct {
		reads []string
		want  []int
		last  bool
	}{
		{nil, nil, false},
		{[]string{"x", "print"}, nil, false},
		{[]string{"_"}, []int{7}, true},
		{[]string{"__"}, []int{4}, true},
		{[]string{"___", "_"}, []int{3, 7}, true},
		{[]string{"Out"}, []int{1, 3, 4, 7}, false},
		{[]string{"_oh", "_3"}, []int{1, 3, 4, 7}, false},
		{[]string{"_3", "_2", "_x", "_10"}, []int{3}, false},
		{[]string{"In", "_i", "_i3", "_ih"}, nil, false},
	} {
		got, last := historyWants(c.reads, results)
		if !reflect.DeepEqual(got, c.want) || last != c.last {
			t.Errorf("%v: got %v %v, want %v %v", c.reads, got, last, c.want, c.last)
		}
	}
	if got, last := historyWants([]string{"__"}, []int{5}); got != nil || !last {
		t.Errorf("__ with one result: got %v %v, want none and last", got, last)
	}
}

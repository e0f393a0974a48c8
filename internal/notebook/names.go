package notebook

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// CellName is how a cell is shown to users everywhere: in the progress
// bar, error messages, the run's summary line and the HTML report. Only
// code cells are counted, as the progress bar counts what it runs, so
// "cell 7 of 8" is the seventh cell that runs; markdown cells, which a
// reader skims past, do not shift the number. The first line of the
// source is shown with it, since a number alone means little in a long
// notebook.
type CellName struct {
	Number, Total int
	// Line is the first non-blank line of the source, shortened.
	Line string
}

// String is "cell 7 of 8".
func (n CellName) String() string {
	return "cell " + strconv.Itoa(n.Number) + " of " + strconv.Itoa(n.Total)
}

// Long is "cell 7 of 8 `first line`", or String for an empty cell.
func (n CellName) Long() string {
	if n.Line == "" {
		return n.String()
	}
	return n.String() + " `" + n.Line + "`"
}

// CellNames names the notebook's code cells by their index in Cells.
func (nb *Notebook) CellNames() map[int]CellName {
	total := 0
	for _, c := range nb.Cells {
		if c.Type() == "code" {
			total++
		}
	}
	out := make(map[int]CellName, total)
	n := 0
	for i, c := range nb.Cells {
		if c.Type() == "code" {
			n++
			out[i] = CellName{Number: n, Total: total, Line: FirstLine(c.Source())}
		}
	}
	return out
}

// lineMax is how many characters of a cell's first line are shown.
const lineMax = 40

// FirstLine is the first non-blank line of src, trimmed and cut to
// lineMax characters (an ellipsis marks a cut).
func FirstLine(src string) string {
	var l string
	for _, s := range strings.Split(src, "\n") {
		if l = strings.TrimSpace(s); l != "" {
			break
		}
	}
	if utf8.RuneCountInString(l) > lineMax {
		r := []rune(l)
		l = strings.TrimSpace(string(r[:lineMax-1])) + "…"
	}
	return l
}

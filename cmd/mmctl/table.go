package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// table is a text table whose columns are two spaces apart. Unlike
// text/tabwriter it can be held to a width: an operator's terminal (and
// status in a narrow tmux pane) must not wrap rows.
type table struct {
	header []string
	rows   [][]string
}

// shrink says that column col may give way down to width min.
type shrink struct{ col, min int }

// write prints the table. With width > 0 and a table wider than that, the
// columns in order give way (in turn, each to its minimum), their cells
// cut with "…".
func (t *table) write(w io.Writer, width int, order []shrink) {
	widths := make([]int, len(t.header))
	for _, row := range append([][]string{t.header}, t.rows...) {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	total := 2 * (len(widths) - 1)
	for _, n := range widths {
		total += n
	}
	for _, s := range order {
		if width <= 0 || total <= width {
			break
		}
		cut := min(total-width, max(0, widths[s.col]-max(s.min, utf8.RuneCountInString(t.header[s.col]))))
		widths[s.col] -= cut
		total -= cut
	}
	for _, row := range append([][]string{t.header}, t.rows...) {
		var b strings.Builder
		for i, c := range row {
			c = cut(c, widths[i])
			if i == len(row)-1 {
				b.WriteString(c)
				break
			}
			fmt.Fprintf(&b, "%s%s  ", c, strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)))
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

// cut shortens s to n runes, ending in "…" when it had to.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:max(0, n-1)]) + "…"
}

// cutLeft shortens s to n runes by its start ("…/dir/file"): a path's end
// says most.
func cutLeft(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-max(0, n-1):])
}

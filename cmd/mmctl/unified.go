package main

import (
	"fmt"
	"strings"
)

// unifiedDiff is the unified diff (diff -u) of two texts given as lines,
// with ctx lines of context; "" when they are equal. Specs are a few
// dozen lines, so the quadratic longest common subsequence is cheap.
func unifiedDiff(fromName, toName string, a, b []string, ctx int) string {
	// lcs[i][j]: the length of the longest common subsequence of a[i:], b[j:].
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	// The edit script: ' ', '-' or '+' with the line and its positions.
	type edit struct {
		op   byte
		line string
		i, j int // lines of a and b before this one
	}
	var script []edit
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			script = append(script, edit{' ', a[i], i, j})
			i, j = i+1, j+1
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			script = append(script, edit{'-', a[i], i, j}) // removals first, as diff -u
			i++
		default:
			script = append(script, edit{'+', b[j], i, j})
			j++
		}
	}
	var out strings.Builder
	for k := 0; k < len(script); {
		if script[k].op == ' ' {
			k++
			continue
		}
		// A hunk: from ctx lines before this change to ctx lines after
		// the last change that is within 2*ctx of the one before it.
		start := max(0, k-ctx)
		end := k
		for n := k; n < len(script); n++ {
			if script[n].op != ' ' {
				end = n
			} else if n-end > 2*ctx {
				break
			}
		}
		end = min(len(script), end+ctx+1)
		if out.Len() == 0 {
			fmt.Fprintf(&out, "--- %s\n+++ %s\n", fromName, toName)
		}
		na, nb := 0, 0
		for _, e := range script[start:end] {
			if e.op != '+' {
				na++
			}
			if e.op != '-' {
				nb++
			}
		}
		fmt.Fprintf(&out, "@@ -%s +%s @@\n", hunkRange(script[start].i, na), hunkRange(script[start].j, nb))
		for _, e := range script[start:end] {
			fmt.Fprintf(&out, "%c%s\n", e.op, e.line)
		}
		k = end
	}
	return out.String()
}

// hunkRange is a hunk's "start,count", 1-based as diff -u writes it.
func hunkRange(before, n int) string {
	if n == 0 {
		return fmt.Sprintf("%d,0", before)
	}
	return fmt.Sprintf("%d,%d", before+1, n)
}

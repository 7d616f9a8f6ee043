package schema

import "cuelang.org/go/cue/ast"

// ViaJSON is s evaluating the files whole, listing the tasks and decoding
// every one the JSON way (CUE's export read by encoding/json): the way the
// others must agree with.
func (s *Schema) ViaJSON() *Schema { return s.with(func(c *Schema) { c.viaJSON = true }) }

// InGroups is s evaluating files that stand alone in up to n groups,
// whatever GOMAXPROCS is.
func (s *Schema) InGroups(n int) *Schema { return s.with(func(c *Schema) { c.groups = n }) }

// WalkOnly is s decoding every task by walking its value, none read from
// its file.
func (s *Schema) WalkOnly() *Schema { return s.with(func(c *Schema) { c.walkOnly = true }) }

// with is a copy of s, counting afresh, as set sets it.
func (s *Schema) with(set func(*Schema)) *Schema {
	c := &Schema{src: s.src, builtins: s.builtins, defaults: s.defaults}
	set(c)
	return c
}

// FromFiles counts the tasks s's loads read from their files.
func (s *Schema) FromFiles() int64 { return s.fromFiles.Load() }

// ApartLoads counts s's loads that evaluated the files in groups.
func (s *Schema) ApartLoads() int64 { return s.apartLoads.Load() }

// Apart is apart of files by their standing, as files by group.
func Apart(files []*ast.File, sizes []int, n int) [][]*ast.File {
	var out [][]*ast.File
	for _, g := range apart(files, standing(files), sizes, n) {
		out = append(out, g.files)
	}
	return out
}

// FellBack counts the tasks s's loads decoded the JSON way because the
// walk left them to it.
func (s *Schema) FellBack() int64 { return s.fellBack.Load() }

// Listed counts s's loads that listed the tasks rather than looking up
// the names the files give them.
func (s *Schema) Listed() int64 { return s.listed.Load() }

// CuePath is cuePath, the path of an error's path elements.
var CuePath = cuePath

// AddsTo is addsTo.
var AddsTo = addsTo

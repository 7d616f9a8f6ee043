package schema

// ViaJSON is s listing the tasks and decoding every one the JSON way
// (CUE's export read by encoding/json), as Load did before the walk. Not for concurrent use with s.
func (s *Schema) ViaJSON() *Schema {
	return &Schema{src: s.src, builtins: s.builtins, viaJSON: true}
}

// InGroups is s evaluating files that stand alone in up to n groups,
// whatever GOMAXPROCS is.
func (s *Schema) InGroups(n int) *Schema {
	return &Schema{src: s.src, builtins: s.builtins, groups: n}
}

// ApartLoads counts s's loads that evaluated the files in groups.
func (s *Schema) ApartLoads() int64 { return s.apartLoads.Load() }

// Apart is apart.
var Apart = apart

// FellBack counts the tasks s's loads decoded the JSON way because the
// walk left them to it.
func (s *Schema) FellBack() int64 { return s.fellBack.Load() }

// Listed counts s's loads that listed the tasks rather than looking up
// the names the files give them.
func (s *Schema) Listed() int64 { return s.listed.Load() }

// CuePath is cuePath, the path of an error's path elements.
var CuePath = cuePath

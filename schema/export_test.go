package schema

// ViaJSON is s decoding every task the JSON way (CUE's export read by
// encoding/json), as Load did before the walk. Not for concurrent use with s.
func (s *Schema) ViaJSON() *Schema {
	return &Schema{ctx: s.ctx, src: s.src, builtins: s.builtins, empty: s.empty, viaJSON: true}
}

// FellBack counts the tasks s's loads decoded the JSON way because the
// walk left them to it.
func (s *Schema) FellBack() int64 { return s.fellBack.Load() }

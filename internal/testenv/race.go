//go:build race

package testenv

// Race is true when the race detector is on: code runs several times
// slower, which tests that need work to take a while allow for.
const Race = true

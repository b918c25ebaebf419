//go:build !race

package main

// raceEnabled: the tests run without -race, and so TestMain builds the
// command without it.
const raceEnabled = false

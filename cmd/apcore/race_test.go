//go:build race

package main

// raceEnabled: the tests run with -race, and so TestMain builds the
// command with it.
const raceEnabled = true

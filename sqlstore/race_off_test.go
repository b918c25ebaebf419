//go:build !race

package sqlstore_test

// raceOn: the race detector is off (see race_on_test.go).
const raceOn = false

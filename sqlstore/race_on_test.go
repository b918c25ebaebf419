//go:build race

package sqlstore_test

// raceOn: the race detector is on, and SQLite (modernc, Go code) runs
// several times slower; the tests that fill a million records in SQLite
// fill fewer.
const raceOn = true

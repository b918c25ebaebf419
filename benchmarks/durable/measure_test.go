package main

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestReadProcStatFindsParentAndCPU(t *testing.T) {
	st, err := readProcStat(os.Getpid())
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	if st.ppid != os.Getppid() {
		t.Fatalf("ppid = %d, want %d", st.ppid, os.Getppid())
	}
	// Burn some CPU, then see it counted.
	before, _ := processCPU(os.Getpid(), false)
	deadline := time.Now().Add(100 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := processCPU(os.Getpid(), false)
	if err != nil || after <= before {
		t.Fatalf("CPU before %v, after %v (%v): a busy loop of 100ms was not counted", before, after, err)
	}
}

func TestProcessCPUCountsReapedChildren(t *testing.T) {
	if _, err := readProcStat(os.Getpid()); err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	before, _ := processCPU(os.Getpid(), true)
	// A child that burns CPU for about 200ms, then is reaped by Wait: its
	// time moves to our cutime and must still be counted.
	cmd := exec.Command(sh, "-c", `end=$(($(date +%s%N) + 200000000)); while [ $(date +%s%N) -lt $end ]; do :; done`)
	if err := cmd.Run(); err != nil {
		t.Skipf("child: %v", err)
	}
	after, err := processCPU(os.Getpid(), true)
	if err != nil {
		t.Fatal(err)
	}
	if after-before < 50*time.Millisecond {
		t.Fatalf("children's CPU grew by %v, want about 200ms", after-before)
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1": true, "localhost": true, "::1": true, "/tmp/pg": true,
		"10.0.0.1": false, "db.example": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

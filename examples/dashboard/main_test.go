package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the program itself when the test asks for it, so that
// the test can start it as a real process and stop it with a signal.
func TestMain(m *testing.M) {
	if os.Getenv("DASHBOARD_EXAMPLE_RUN") == "1" {
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// The example serves the page and the event stream, runs example tasks,
// and stops cleanly on Ctrl-C even with an event stream open.
func TestExample(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-addr", "127.0.0.1:0", "-every", "50ms")
	cmd.Env = append(os.Environ(), "DASHBOARD_EXAMPLE_RUN=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck // ended already, normally
	lines := bufio.NewScanner(stdout)
	if !lines.Scan() {
		t.Fatal("the example printed nothing")
	}
	first := lines.Text()
	i := strings.Index(first, "http://")
	if i < 0 {
		t.Fatalf("no URL in %q", first)
	}
	url := strings.Fields(first[i:])[0]

	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(page), "apcore tasks") {
		t.Fatalf("GET %s: %d", url, res.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"api/events", nil)
	events, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Body.Close()
	// Example tasks come by.
	sc := bufio.NewScanner(events.Body)
	modules := map[string]bool{}
	for sc.Scan() && len(modules) < 2 {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			for _, m := range []string{"demo.quick", "demo.slow", "demo.flaky", "demo.failing"} {
				if strings.Contains(data, `"module_id":"`+m+`"`) {
					modules[m] = true
				}
			}
		}
	}
	if len(modules) < 2 {
		t.Fatalf("events of %d example modules, want several", len(modules))
	}

	// Ctrl-C, with the event stream still open.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _ = io.Copy(io.Discard, stdout)
		done <- cmd.Wait()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the example did not exit cleanly: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the example did not stop within 10 s of SIGINT")
	}
}

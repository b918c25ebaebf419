package processtest

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// pauseProxy is a TCP proxy on loopback in front of a server. Pause stops
// it forwarding bytes, both ways and on every connection, new ones too,
// without closing any; Resume lets them flow again. To a client behind it,
// a pause is a network that went silent: its calls neither fail nor get an
// answer.
type pauseProxy struct {
	t      *testing.T
	target string
	ln     net.Listener

	mu     sync.Mutex
	gate   chan struct{} // closed while bytes flow; open while paused
	conns  []net.Conn
	closed bool
	done   chan struct{} // closed by Close
	wg     sync.WaitGroup
}

// newPauseProxy listens on 127.0.0.1:0 and forwards to target (host:port).
// It is closed at the end of the test.
func newPauseProxy(t *testing.T, target string) *pauseProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &pauseProxy{t: t, target: target, ln: ln, gate: make(chan struct{}), done: make(chan struct{})}
	close(p.gate)
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.Close)
	return p
}

// Addr is the host:port clients connect to.
func (p *pauseProxy) Addr() string { return p.ln.Addr().String() }

// Pause stops every byte until Resume.
func (p *pauseProxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
		p.gate = make(chan struct{})
	default: // paused already
	}
}

// Resume lets the bytes held since Pause, and the rest, through.
func (p *pauseProxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.gate:
	default:
		close(p.gate)
	}
}

// wait returns true once bytes may flow, false when the proxy is closed.
func (p *pauseProxy) wait() bool {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	select {
	case <-gate:
		return true
	case <-p.done:
		return false
	}
}

// Close stops listening, closes every connection and waits for the
// forwarding goroutines to end.
func (p *pauseProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.done)
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
}

// track keeps c to be closed by Close; false when Close has begun.
func (p *pauseProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns = append(p.conns, c)
	return true
}

func (p *pauseProxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.t.Errorf("proxy accept: %v", err)
			}
			return
		}
		if !p.track(client) {
			_ = client.Close()
			return
		}
		p.wg.Add(1)
		go p.serve(client)
	}
}

// serve connects client to the target, once bytes may flow, and copies
// both ways.
func (p *pauseProxy) serve(client net.Conn) {
	defer p.wg.Done()
	if !p.wait() {
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = client.Close()
		return
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	p.wg.Add(2)
	go p.copy(server, client)
	go p.copy(client, server)
}

// copy forwards from src to dst, holding each chunk it reads while the
// proxy is paused. When either side ends, both are closed.
func (p *pauseProxy) copy(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.wait() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

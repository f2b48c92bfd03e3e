package chaos

import (
	"bufio"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// echoNode is a stand-in for a node's Raft port: it echoes every line back and counts the
// lines it received.
func echoNode(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var lines atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					lines.Add(1)
					if _, err := c.Write([]byte(l)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), &lines
}

// dialAs opens a connection to proxy addr whose first bytes name from (as hashicorp/raft's
// RPCHeader names the sender's advertised address) and returns it with its reader, or an
// error if the proxy does not carry a line both ways.
func dialAs(t *testing.T, addr, from string) (net.Conn, *bufio.Reader, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, "\x01hdr Addr="+from+"\n"); err != nil {
		c.Close()
		return nil, nil, err
	}
	return c, r, nil
}

func roundTrip(c net.Conn, r *bufio.Reader, line string) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write([]byte(line)); err != nil {
		return err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if got != line {
		return &net.OpError{Op: "echo", Err: errString("got " + got)}
	}
	return nil
}

type errString string

func (e errString) Error() string { return string(e) }

// Isolating a node cuts its Raft traffic both ways: the connections it dialed and the ones
// dialed to it are closed, new ones in either direction carry nothing to the other side,
// traffic between the other nodes flows on; healing restores every direction.
func TestNetFabric_IsolateCutsBothWaysAndHealRestores(t *testing.T) {
	f := newNetFabric()
	t.Cleanup(f.Close)
	targets := map[string]string{}
	lines := map[string]*atomic.Int64{}
	proxy := map[string]string{}
	for _, id := range []string{"n1", "n2", "n3"} {
		targets[id], lines[id] = echoNode(t)
		addr, err := f.add(id, targets[id], "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		proxy[id] = addr
	}
	// n1 -> n2 (n1's outbound, e.g. a leader's AppendEntries) and n2 -> n1 (inbound to n1).
	out, outR, err := dialAs(t, proxy["n2"], proxy["n1"])
	if err != nil {
		t.Fatalf("n1 -> n2 before the partition: %v", err)
	}
	defer out.Close()
	in, inR, err := dialAs(t, proxy["n1"], proxy["n2"])
	if err != nil {
		t.Fatalf("n2 -> n1 before the partition: %v", err)
	}
	defer in.Close()
	other, otherR, err := dialAs(t, proxy["n3"], proxy["n2"])
	if err != nil {
		t.Fatalf("n2 -> n3 before the partition: %v", err)
	}
	defer other.Close()

	f.Isolate("n1")
	if err := roundTrip(out, outR, "after\n"); err == nil {
		t.Error("n1 -> n2: an open connection from the isolated node still carries traffic")
	}
	if err := roundTrip(in, inR, "after\n"); err == nil {
		t.Error("n2 -> n1: an open connection to the isolated node still carries traffic")
	}
	before := lines["n2"].Load() + lines["n1"].Load()
	if c, _, err := dialAs(t, proxy["n2"], proxy["n1"]); err == nil {
		c.Close()
		t.Error("n1 -> n2: a new connection from the isolated node carries traffic")
	}
	if c, _, err := dialAs(t, proxy["n1"], proxy["n3"]); err == nil {
		c.Close()
		t.Error("n3 -> n1: a new connection to the isolated node carries traffic")
	}
	if got := lines["n2"].Load() + lines["n1"].Load(); got != before {
		t.Errorf("%d lines reached n1 or n2 across the partition", got-before)
	}
	if err := roundTrip(other, otherR, "majority\n"); err != nil {
		t.Errorf("n2 -> n3 (both on the majority side): %v", err)
	}
	if c, _, err := dialAs(t, proxy["n2"], proxy["n3"]); err != nil {
		t.Errorf("n3 -> n2, new, during n1's partition: %v", err)
	} else {
		c.Close()
	}

	f.Heal("n1")
	for _, d := range [][2]string{{"n1", "n2"}, {"n2", "n1"}, {"n3", "n1"}, {"n1", "n3"}} {
		c, _, err := dialAs(t, proxy[d[1]], proxy[d[0]])
		if err != nil {
			t.Errorf("%s -> %s after heal: %v", d[0], d[1], err)
			continue
		}
		c.Close()
	}
}

package chaos

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one child process (a coordinator node or a demo participant) in its own process
// group, with stdout and stderr appended to one log file. It can be started again after it
// died (same arguments, same log file).
type proc struct {
	name    string
	bin     string
	args    []string
	logPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current process has been reaped
	paused  bool
	starts  int
	logFile *os.File
	// stopping is set when the harness itself ends the current process (kill, terminate,
	// SIGKILL/SIGTERM through signal); an exit without it is a process that stopped on its
	// own, recorded in unexpected.
	stopping   bool
	unexpected []string
}

func newProc(name, bin, logPath string, args ...string) *proc {
	return &proc{name: name, bin: bin, args: args, logPath: logPath}
}

// start launches the process unless it is already running.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return nil // still running
		}
	}
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.starts++
	fmt.Fprintf(f, "=== chaos: start #%d of %s at %s: %s %s\n", p.starts, p.name, time.Now().Format(time.RFC3339Nano), p.bin, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Own process group, so that a signal reaches the whole group; Pdeathsig kills the child
	// if the test process dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.paused, p.logFile, p.stopping = cmd, done, false, f, false
	start := p.starts
	go func() {
		_ = cmd.Wait()
		at := time.Now()
		fmt.Fprintf(f, "=== chaos: %s exited at %s: %v\n", p.name, at.Format(time.RFC3339Nano), cmd.ProcessState)
		f.Close()
		p.mu.Lock()
		if !p.stopping {
			p.unexpected = append(p.unexpected, fmt.Sprintf("%s (start #%d, %s) exited on its own at %s: %v",
				p.name, start, filepath.Base(p.bin), at.Format(timeLayout), cmd.ProcessState))
		}
		p.mu.Unlock()
		close(done)
	}()
	return nil
}

// setCommand replaces the binary and arguments the next start runs (the log file stays).
// It fails while the process runs.
func (p *proc) setCommand(bin string, args []string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is running: stop it before changing its binary", p.name)
		}
	}
	p.bin, p.args = bin, append([]string(nil), args...)
	return nil
}

// binary returns the binary the process runs (or will at its next start).
func (p *proc) binary() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.bin
}

// unexpectedExits lists every exit of this process the harness did not cause.
func (p *proc) unexpectedExits() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.unexpected...)
}

// running reports whether the process is alive (it may be paused).
func (p *proc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// isPaused reports whether the process was stopped with SIGSTOP and not yet continued.
func (p *proc) isPaused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// signal sends sig to the process group.
func (p *proc) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return errors.New("not started")
	}
	select {
	case <-p.done:
		return errors.New("not running")
	default:
	}
	if sig == syscall.SIGKILL || sig == syscall.SIGTERM {
		p.stopping = true
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		return err
	}
	switch sig {
	case syscall.SIGSTOP:
		p.paused = true
	case syscall.SIGCONT:
		p.paused = false
	}
	return nil
}

// kill SIGKILLs the process group and waits (bounded) until the process is reaped.
func (p *proc) kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	_ = cmd.Process.Kill()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) not reaped 10s after SIGKILL", p.name, cmd.Process.Pid)
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	return nil
}

// terminate sends SIGTERM and waits up to grace for the process to exit, then SIGKILLs it.
// It reports whether the process exited on its own.
func (p *proc) terminate(grace time.Duration) bool {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.stopping = true
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return true
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
		return true
	case <-time.After(grace):
		_ = p.kill()
		return false
	}
}

// waitExit waits until the process has exited or ctx ends.
func (p *proc) waitExit(ctx context.Context) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// tail returns the last n lines of the process's log file.
func (p *proc) tail(n int) string {
	return tailFile(p.logPath, n)
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const maxRead = 256 << 10
	st, _ := f.Stat()
	if st != nil && st.Size() > maxRead {
		_, _ = f.Seek(st.Size()-maxRead, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// procSet holds every process the harness started, so that all of them die on exit.
type procSet struct {
	mu    sync.Mutex
	procs []*proc
}

func (s *procSet) add(p *proc) *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.procs = append(s.procs, p)
	return p
}

func (s *procSet) all() []*proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*proc(nil), s.procs...)
}

// killAll SIGKILLs every process (paused ones too: SIGKILL ends a stopped process).
func (s *procSet) killAll() {
	var wg sync.WaitGroup
	for _, p := range s.all() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = p.kill()
		}()
	}
	wg.Wait()
}

// dumpLogs writes the tail of every process's log to w.
func (s *procSet) dumpLogs(w io.Writer, lines int) {
	for _, p := range s.all() {
		fmt.Fprintf(w, "\n----- %s: last %d lines of %s -----\n%s\n", p.name, lines, filepath.Base(p.logPath), p.tail(lines))
	}
}

// Package server assembles one txcoord node from its parts (cluster.Node, the 2PC engine,
// the participant client and the HTTP API) and shuts it down in order: stop accepting
// HTTP, hand leadership over, stop the engine, stop Raft. cmd/txcoord and the multi-node
// tests both start nodes through it, so what the tests run is what operators run.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/propagation"

	"github.com/txcoord/txcoord/archive"
	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/tracing"
	"github.com/txcoord/txcoord/metrics"
	"github.com/txcoord/txcoord/ui"
)

// Config is everything one node needs.
type Config struct {
	Cluster cluster.Config
	Engine  coordinator.Config
	API     httpapi.Config
	// HTTPBind is the API's listen address, host:port (":0" picks a free port; the chosen
	// address is then advertised unless Cluster.HTTPAdvertise is set).
	HTTPBind string
	// Listener replaces HTTPBind with an already open listener.
	Listener net.Listener
	// StuckAfter is what the txcoord_stuck_transactions metric counts as stuck (see
	// metrics.Sources) [1m]; httpapi.Config.StuckAfter is /v1/stuck's.
	StuckAfter time.Duration
	// TLS, when set, serves the API over HTTPS (tlsutil.Server: the certificate is
	// re-read when its files change).
	TLS *tls.Config
	// Caller replaces the participant client (tests inject faults through it).
	Caller coordinator.Caller
	// Participant tunes the participant client when Caller is nil (headers sent to
	// participants, the dial-time address policy).
	Participant call.ClientOptions
	Logger      hclog.Logger
	// Archive tunes the node's history of pruned transactions, kept in DataDir/archive
	// (package archive); NoArchive turns it off. A cluster in memory has none.
	Archive   archive.Options
	NoArchive bool
	// Tracing, when on (tracing.FromEnv), records the engine's spans and reads the
	// traceparent of each POST on the leader; nil or off: no tracing. The caller owns it
	// and shuts it down after Close, so that the spans of the last transactions are
	// flushed.
	Tracing *tracing.Tracing
}

// Server is one running node.
type Server struct {
	Node   *cluster.Node
	Engine *coordinator.Engine
	API    *httpapi.Server
	lg     hclog.Logger
	http   *http.Server
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
	https  bool

	// Archive is the node's history of pruned transactions, nil when it has none.
	Archive *archive.Archive
}

// Start opens the node, starts its leader loop and serves the API. It returns when the
// API listens; the cluster may still be electing a leader (see Node.Ready).
func Start(cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	ln := cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.HTTPBind); err != nil {
			return nil, fmt.Errorf("http listen on %q: %w", cfg.HTTPBind, err)
		}
	}
	if cfg.Cluster.HTTPAdvertise == "" {
		cfg.Cluster.HTTPAdvertise = ln.Addr().String()
	}
	cfg.Cluster.Logger = cfg.Logger
	arc, err := openArchive(&cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	node, err := cluster.Open(cfg.Cluster)
	if err != nil {
		ln.Close()
		closeArchive(arc)
		return nil, err
	}
	caller := cfg.Caller
	if caller == nil {
		caller = call.NewClient(cfg.Participant)
	}
	cfg.Engine.Logger = cfg.Logger
	if cfg.Engine.Now == nil && cfg.Cluster.Clock != nil {
		cfg.Engine.Now = cfg.Cluster.Clock // one clock per node: deadlines, retention, probes
	}
	if cfg.Engine.ClockBound == nil {
		cfg.Engine.ClockBound = node.ClockBound
	}
	if cfg.Engine.VerifyLeader == nil {
		// The fence: before a participant call, leadership confirmed within the lease.
		cfg.Engine.VerifyLeader = func(context.Context) error { return node.Raft.VerifyLeader().Error() }
	}
	if cfg.Engine.FeatureGate == nil {
		cfg.Engine.FeatureGate = node.FeatureError
	}
	if cfg.Engine.Archived == nil && arc != nil {
		cfg.Engine.Archived = arc.Get
	}
	if cfg.Engine.InquiryURLs == nil {
		https := cfg.TLS != nil
		cfg.Engine.InquiryURLs = func() []string { return nodeURLs(node.FSM.Members(), https) }
	}
	var eng *coordinator.Engine
	msrc := metrics.Sources{Node: node, InFlight: func() int64 { return eng.InFlight() }, StuckAfter: cfg.StuckAfter, DataDir: dataDirOf(cfg.Cluster)}
	if arc != nil { // never a typed nil in the interface
		msrc.Archive = arc
	}
	m := metrics.New(msrc)
	cfg.Engine.Observer = m
	if cfg.Tracing != nil && cfg.Tracing.Enabled {
		cfg.Engine.TracerProvider = cfg.Tracing.Provider
		cfg.API.Propagator = propagation.TraceContext{}
	}
	eng = coordinator.New(cfg.Engine, node, node.FSM, caller)
	cfg.API.Logger = cfg.Logger
	warnInsecure(cfg)
	api := httpapi.New(cfg.API, node, node.FSM, eng)
	api.Echo().Pre(m.HTTPMiddleware()) // before routing: counts what auth and the rate limiter refuse too
	api.Echo().GET("/metrics", echo.WrapHandler(m.Handler()))
	ui.Register(api.Echo())
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	s := &Server{Node: node, Engine: eng, API: api, Archive: arc, lg: cfg.Logger, ln: ln, https: cfg.TLS != nil}
	s.http = api.NewHTTPServer(ln.Addr().String())
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		node.Run(ctx, func(lctx context.Context) {
			// Every participant call of this term names this node and the term.
			term := node.Raft.CurrentTerm()
			eng.Lead(call.WithOrigin(lctx, node.ID(), term), term)
		})
	}()
	go api.RunCatchUp(ctx) // stale reads wait until this node applied the leader's commit index
	go func() {
		// A node whose FSM halted has stopped its Raft side; the API goes with it.
		select {
		case <-node.Halted():
			s.lg.Error("node halted: closing the API", "error", node.HaltError())
			_ = s.Kill()
		case <-ctx.Done():
		}
	}()
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.lg.Error("http server stopped", "error", err)
		}
	}()
	return s, nil
}

// dataDirOf is the directory the metrics measure: none for an in-memory node.
func dataDirOf(c cluster.Config) string {
	if c.InMemory {
		return ""
	}
	return c.DataDir
}

// Halted is closed when the node stopped itself on a log entry it cannot apply (see
// cluster.Node.Halted); the server is then closed too.
func (s *Server) Halted() <-chan struct{} { return s.Node.Halted() }

// HTTPAddr returns the address the API listens on.
func (s *Server) HTTPAddr() string { return s.ln.Addr().String() }

// URL returns the API's base URL, "http://host:port".
func (s *Server) URL() string {
	if s.https {
		return "https://" + s.HTTPAddr()
	}
	return "http://" + s.HTTPAddr()
}

// Kill stops the node at once, as a crash would (tests): connections are cut, no
// leadership transfer, in-flight work is abandoned.
func (s *Server) Kill() error {
	var err error
	s.once.Do(func() {
		_ = s.http.Close()
		err = s.Node.Kill()
		s.cancel()
		s.wg.Wait()
		closeArchive(s.Archive)
	})
	return err
}

// Close shuts the node down in order: the API stops taking requests (in-flight ones get
// up to 5 s), leadership moves to another voter so its transactions continue there, the
// engine's drivers stop, Raft stops and the stores close. It is safe to call twice.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = s.http.Shutdown(sctx)
		cancel()
		_ = s.http.Close()
		err = s.Node.Close()
		s.cancel()
		s.wg.Wait()
		closeArchive(s.Archive)
	})
	return err
}

// nodeURLs returns the base URLs of the nodes' HTTP APIs as the log records them
// (SetMember), sorted by node id: where participants ask for an outcome ("inquiry" in the
// Prepare body).
func nodeURLs(members map[string]string, https bool) []string {
	ids := make([]string, 0, len(members))
	for id := range members {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		addr := strings.TrimSuffix(members[id], "/")
		switch {
		case strings.HasPrefix(addr, "http://") && https:
			addr = "https://" + strings.TrimPrefix(addr, "http://")
		case strings.HasPrefix(addr, "http://"), strings.HasPrefix(addr, "https://"):
		case https:
			addr = "https://" + addr
		default:
			addr = "http://" + addr
		}
		out = append(out, addr)
	}
	return out
}

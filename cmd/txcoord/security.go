package main

import (
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/cobra"

	"github.com/txcoord/txcoord/cluster"
	"github.com/txcoord/txcoord/coordinator/call"
	"github.com/txcoord/txcoord/httpapi"
	"github.com/txcoord/txcoord/internal/tlsutil"
	"github.com/txcoord/txcoord/server"
)

// Environment variables read by serve (docs/security.md).
const (
	envAPITokens    = "TXCOORD_API_TOKENS"    // comma-separated client tokens
	envClusterToken = "TXCOORD_CLUSTER_TOKEN" // the cluster token (comma-separated: rotation, first sent)
)

// securityFlags are serve's issue-8 flags: authentication, and (in files next to this one)
// the participant URL policy, rate limits and TLS.
type securityFlags struct {
	apiTokenFile, clusterTokenFile string
	metricsOpen                    bool
	tokenPoll                      time.Duration
	partAllow                      []string
	partDenyLoopback               bool
	rateLimit                      float64
	rateBurst                      int
	readHeaderTimeout              time.Duration
	tlsCert, tlsKey, tlsCA         string
	raftTLS                        *tlsPair // mutual TLS for Raft; nil: plain TCP
}

type tlsPair struct{ server, client *tls.Config }

func (s *securityFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&s.apiTokenFile, "api-token-file", "", "file of client bearer tokens, one per line (several for rotation; re-read on change and on SIGHUP); also "+envAPITokens+". No token at all: authentication is OFF")
	f.StringVar(&s.clusterTokenFile, "cluster-token-file", "", "file holding the cluster token (first line is sent to other nodes; further lines are also accepted, for rotation); also "+envClusterToken+". Required by operator, membership and forwarded requests")
	f.BoolVar(&s.metricsOpen, "metrics-open", false, "serve GET /metrics without a token when authentication is on")
	f.DurationVar(&s.tokenPoll, "token-file-poll", 5*time.Second, "how often token files are checked for changes (0: only on SIGHUP)")
	f.StringSliceVar(&s.partAllow, "participant-allow", nil, "participant allowlist: host names, domain suffixes (.example.com), IPs or CIDRs (10.0.0.0/8), comma-separated or repeated (empty: any host but the refused ones)")
	f.Float64Var(&s.rateLimit, "rate-limit", 0, "requests per second each client (bearer token, else IP) may send; over it the answer is 429 with Retry-After (0: no limit)")
	f.IntVar(&s.rateBurst, "rate-burst", 0, "requests a client may send at once before --rate-limit applies (0: the rate rounded up)")
	f.DurationVar(&s.readHeaderTimeout, "read-header-timeout", 10*time.Second, "how long a client may take to send its request headers (slowloris)")
	f.StringVar(&s.tlsCert, "tls-cert", "", "PEM certificate: serve the HTTP API over HTTPS (re-read when the file changes); with --tls-ca also this node's certificate for mutual TLS on Raft")
	f.StringVar(&s.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	f.StringVar(&s.tlsCA, "tls-ca", "", "PEM CA bundle of the cluster: with --tls-cert/--tls-key, Raft connections are mutual TLS (peers must present a certificate it signed) and forwarding to the leader uses HTTPS verified against it")
	f.BoolVar(&s.partDenyLoopback, "participant-deny-loopback", false, "refuse loopback participant addresses (127.0.0.0/8, ::1, localhost); link-local, cloud metadata and this node's own addresses are always refused")
}

// applyPolicy sets the participant URL policy on the API (checked at submission) and on
// the participant client (checked on each dialed address).
func (s *securityFlags) applyPolicy(cfg *server.Config) error {
	self := []string{cfg.HTTPBind, cfg.Cluster.HTTPAdvertise, cfg.Cluster.RaftBind, cfg.Cluster.RaftAdvertise}
	pol := &call.Policy{Allow: s.partAllow, DenyLoopback: s.partDenyLoopback}
	for _, a := range self {
		if a != "" {
			pol.Self = append(pol.Self, a)
		}
	}
	if err := pol.Compile(); err != nil {
		return fmt.Errorf("--participant-allow: %w", err)
	}
	cfg.API.URLPolicy = pol
	cfg.Participant.Policy = pol
	return nil
}

// tokens builds a TokenSet from a file or, failing that, an environment variable.
func tokens(file, env, flag string) (*httpapi.TokenSet, error) {
	v := os.Getenv(env)
	switch {
	case file != "" && v != "":
		return nil, fmt.Errorf("both --%s and %s are set: use one", flag, env)
	case file != "":
		return httpapi.LoadTokenFile(file)
	case v != "":
		ts, err := httpapi.NewTokenSet(httpapi.ParseTokenList(v)...)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", env, err)
		}
		return ts, nil
	}
	return nil, nil
}

// apply configures authentication on cfg and starts the token-file reloaders.
func (s *securityFlags) apply(cfg *server.Config, lg hclog.Logger) error {
	api, err := tokens(s.apiTokenFile, envAPITokens, "api-token-file")
	if err != nil {
		return err
	}
	cl, err := tokens(s.clusterTokenFile, envClusterToken, "cluster-token-file")
	if err != nil {
		return err
	}
	cfg.API.Auth = &httpapi.Auth{API: api, Cluster: cl, OpenMetrics: s.metricsOpen}
	if s.rateLimit < 0 || s.rateBurst < 0 || s.readHeaderTimeout < 0 {
		return fmt.Errorf("--rate-limit, --rate-burst and --read-header-timeout must not be negative")
	}
	cfg.API.RateLimit = httpapi.RateLimit{PerSecond: s.rateLimit, Burst: s.rateBurst}
	cfg.API.ReadHeaderTimeout = s.readHeaderTimeout
	if err := s.applyTLS(cfg, lg); err != nil {
		return err
	}
	if err := s.applyPolicy(cfg); err != nil {
		return err
	}
	if s.apiTokenFile == "" && s.clusterTokenFile == "" {
		return nil
	}
	stop := make(chan struct{}) // serve runs until the process exits
	if s.tokenPoll > 0 {
		go api.Watch(s.tokenPoll, lg.Named("auth"), stop)
		go cl.Watch(s.tokenPoll, lg.Named("auth"), stop)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			for _, ts := range []*httpapi.TokenSet{api, cl} {
				if err := ts.Reload(); err != nil {
					lg.Error("SIGHUP: token file reload failed; keeping the previous tokens", "error", err)
				}
			}
			lg.Info("SIGHUP: token files re-read", "client_tokens", api.Len(), "cluster_tokens", cl.Len())
		}
	}()
	return nil
}

// envToken is the client token the CLI sends (submit, cluster): TXCOORD_TOKEN, else the
// first of TXCOORD_API_TOKENS.
const envToken = "TXCOORD_TOKEN"

// setCLIAuth adds a bearer token to a CLI request: the cluster token first when
// preferCluster (operator and membership commands), else the client token.
func setCLIAuth(h http.Header, preferCluster bool) {
	var tok string
	cluster := httpapi.ParseTokenList(os.Getenv(envClusterToken))
	client := httpapi.ParseTokenList(os.Getenv(envAPITokens))
	switch {
	case preferCluster && len(cluster) > 0:
		tok = cluster[0]
	case os.Getenv(envToken) != "":
		tok = os.Getenv(envToken)
	case len(client) > 0:
		tok = client[0]
	case len(cluster) > 0:
		tok = cluster[0]
	}
	if tok != "" {
		h.Set("Authorization", "Bearer "+tok)
	}
}

// applyTLS sets up HTTPS for the API, HTTPS forwarding and mutual TLS for Raft.
func (s *securityFlags) applyTLS(cfg *server.Config, lg hclog.Logger) error {
	if (s.tlsCert == "") != (s.tlsKey == "") {
		return fmt.Errorf("--tls-cert and --tls-key go together")
	}
	if s.tlsCert == "" {
		if s.tlsCA != "" {
			return fmt.Errorf("--tls-ca needs --tls-cert and --tls-key (this node's certificate)")
		}
		lg.Warn("TLS is OFF: the API, forwarded requests (with the cluster token) and Raft traffic travel in clear; set --tls-cert, --tls-key and --tls-ca")
		return nil
	}
	r, err := tlsutil.NewReloader(s.tlsCert, s.tlsKey)
	if err != nil {
		return fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	r.OnError = func(err error) { lg.Error("TLS certificate reload failed; keeping the previous one", "error", err) }
	cfg.TLS = tlsutil.Server(r)
	if s.tlsCA == "" {
		cfg.API.ForwardTLS = tlsutil.Client(nil, nil) // system roots
		lg.Warn("no --tls-ca: Raft traffic is not encrypted or authenticated")
		return nil
	}
	pool, err := tlsutil.LoadCA(s.tlsCA)
	if err != nil {
		return fmt.Errorf("--tls-ca: %w", err)
	}
	cfg.API.ForwardTLS = tlsutil.Client(pool, r)
	s.raftTLS = &tlsPair{server: tlsutil.MutualServer(r, pool), client: tlsutil.MutualClient(r, pool)}
	return nil
}

// newTransport is the Raft transport: mutual TLS when --tls-ca is set (applyTLS ran).
func (s *securityFlags) newTransport(bind, advertise string, lg hclog.Logger) (*cluster.Transport, error) {
	if s.raftTLS != nil {
		return cluster.NewTLSTransport(bind, advertise, s.raftTLS.server, s.raftTLS.client, lg)
	}
	return cluster.NewTransport(bind, advertise, lg)
}

package server

// warnInsecure logs, once at start, each protection of issue 8 that is off (see
// docs/security.md). It never logs a token.
func warnInsecure(cfg Config) {
	a := cfg.API.Auth
	switch {
	case !a.Enabled():
		cfg.Logger.Warn("authentication is OFF: anyone who reaches the HTTP port can run, retry and resolve transactions and change cluster membership; set TXCOORD_API_TOKENS or --api-token-file, and TXCOORD_CLUSTER_TOKEN or --cluster-token-file")
	case a.API.Len() == 0:
		cfg.Logger.Warn("no client tokens: the client API is open; only operator, membership and forwarded requests need the cluster token")
	case a.Cluster.Len() == 0:
		cfg.Logger.Warn("no cluster token: operator and membership routes accept client tokens; set TXCOORD_CLUSTER_TOKEN or --cluster-token-file")
	}
}

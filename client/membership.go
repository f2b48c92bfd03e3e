package client

import (
	"context"

	"github.com/txcoord/txcoord/api"
)

// Membership changes go to the leader (a follower passes them on once) and need the
// cluster token when the cluster has one. Each returns the cluster as the node that
// answered sees it after the change.

// Join adds a started node (run without peers) as a voter: id is its node id, raftAddr its
// Raft address as other nodes dial it, httpAddr its API address (optional). Join is
// idempotent, so it is retried like a read.
func (c *Client) Join(ctx context.Context, id, raftAddr, httpAddr string) (*api.ClusterStatus, error) {
	return c.membership(ctx, true, "join", api.MembershipRequest{ID: id, RaftAddr: raftAddr, HTTPAddr: httpAddr})
}

// Remove removes server id from the cluster. It is idempotent, so it is retried like a
// read; an id the cluster does not know is ErrNotFound.
func (c *Client) Remove(ctx context.Context, id string) (*api.ClusterStatus, error) {
	return c.membership(ctx, true, "remove", api.MembershipRequest{ID: id})
}

// TransferLeadership hands leadership to voter to ("": the most up-to-date one). A request
// that may have reached a node is not resent (a repeat would move leadership again).
func (c *Client) TransferLeadership(ctx context.Context, to string) (*api.ClusterStatus, error) {
	return c.membership(ctx, false, "transfer-leadership", api.MembershipRequest{To: to})
}

func (c *Client) membership(ctx context.Context, idempotent bool, action string, req api.MembershipRequest) (*api.ClusterStatus, error) {
	var st api.ClusterStatus
	if err := c.call(ctx, idempotent, "POST", "/v1/cluster/"+action, nil, req, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// ClusterAt returns the view of the cluster of the node at baseURL (any URL, not only the
// client's nodes: a member's httpAddr from Cluster), with the client's token and TLS.
// It is tried once, without retries.
func (c *Client) ClusterAt(ctx context.Context, baseURL string) (*api.ClusterStatus, error) {
	one, err := New([]string{baseURL}, Options{Token: c.opts.Token, TLS: c.opts.TLS, HTTPClient: c.hc, AttemptTimeout: c.opts.AttemptTimeout})
	if err != nil {
		return nil, err
	}
	var st api.ClusterStatus
	if _, err := one.once(ctx, c.opts.AttemptTimeout, "GET", "/v1/cluster", nil, nil, "", &st); err != nil {
		return nil, err
	}
	return &st, nil
}

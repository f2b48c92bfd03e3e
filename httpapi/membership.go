package httpapi

import (
	"bytes"
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
	"github.com/txcoord/txcoord/cluster"
)

// Membership is the cluster side of membership changes (*cluster.Node implements it).
// When the Node given to New also implements it, the membership routes are served:
//
//	POST /v1/cluster/join                {"id", "raftAddr", "httpAddr"}
//	POST /v1/cluster/remove              {"id"}
//	POST /v1/cluster/transfer-leadership {"to"}  ("" or absent: any up-to-date voter)
//
// Each goes to the leader (a follower passes it on once) and answers the new
// GET /v1/cluster view. Join and remove are idempotent and follow the same rules as the
// discovery protocol's (cluster.Node.Join, cluster.Node.Remove): a joined server starts
// as a non-voter that autopilot promotes once healthy and stable, and a join of a server
// the leader cannot reach is refused (409 conflict).
type Membership interface {
	Join(ctx context.Context, req cluster.JoinRequest) error
	Remove(ctx context.Context, id string) error
	TransferLeadership(to string) error
}

// MembershipRequest is the body of the membership routes (api.MembershipRequest).
type MembershipRequest = api.MembershipRequest

func (s *Server) membershipRoutes() {
	m, ok := s.node.(Membership)
	if !ok {
		return
	}
	s.echo.POST("/v1/cluster/join", s.membershipAction("join", func(ctx context.Context, r MembershipRequest) error {
		if r.ID == "" || r.RaftAddr == "" {
			return badRequest(`"id" and "raftAddr" are required`)
		}
		return m.Join(ctx, cluster.JoinRequest{ID: r.ID, RaftAddr: r.RaftAddr, HTTPAddr: r.HTTPAddr})
	}))
	s.echo.POST("/v1/cluster/remove", s.membershipAction("remove", func(ctx context.Context, r MembershipRequest) error {
		if r.ID == "" {
			return badRequest(`"id" is required`)
		}
		return m.Remove(ctx, r.ID)
	}))
	s.echo.POST("/v1/cluster/transfer-leadership", s.membershipAction("transfer-leadership", func(_ context.Context, r MembershipRequest) error {
		return m.TransferLeadership(r.To)
	}))
}

func (s *Server) membershipAction(name string, do func(context.Context, MembershipRequest) error) echo.HandlerFunc {
	return func(c echo.Context) error {
		body, aerr := s.readBody(c.Request())
		if aerr != nil {
			return writeError(c, aerr)
		}
		var req MembershipRequest
		if len(bytes.TrimSpace(body)) > 0 {
			if aerr := decodeStrict(body, &req); aerr != nil {
				return writeError(c, aerr)
			}
		}
		if !s.node.LeaderReady() {
			return s.forwardOnce(c, "/v1/cluster/"+name, body)
		}
		if err := do(c.Request().Context(), req); err != nil {
			ae := errorOf(err, codeUnavailable)
			if ae.Code == codeUnavailable {
				ae.Detail = name + ": " + ae.Detail
			}
			return writeError(c, ae)
		}
		return c.JSON(http.StatusOK, s.clusterView())
	}
}

package httpapi

import (
	"fmt"

	"github.com/txcoord/txcoord/fsm"
)

// checkPolicy applies Config.URLPolicy to every URL of every participant (issue 8). It
// runs inside parseRequest, so a refused URL is a 400 with the reason and is never logged,
// stored or forwarded. A nil policy still refuses what call.Policy always refuses
// (link-local and metadata addresses).
func (s *Server) checkPolicy(parts []fsm.Participant) *apiError {
	for i, p := range parts {
		for _, u := range []struct{ name, url string }{{"prepare", p.Prepare}, {"commit", p.Commit}, {"rollback", p.Rollback}} {
			if err := s.cfg.URLPolicy.CheckURL(u.url); err != nil {
				return badRequest(fmt.Sprintf("services[%d]: %s URL refused: %v", i, u.name, err))
			}
		}
	}
	return nil
}

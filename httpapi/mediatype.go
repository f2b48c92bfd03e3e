package httpapi

import (
	"mime"
	"net/http"

	"github.com/labstack/echo/v4"
)

const codeMediaType = "unsupported_media_type"

// jsonOnly refuses a POST whose Content-Type is not application/json with 415. Browsers
// send cross-site form posts and no-cors fetches as text/plain, form or multipart bodies
// (or with no type at all); requiring application/json makes any such request need a CORS
// preflight, which txcoord never grants, so a web page cannot forge transactions, operator
// actions or membership changes on behalf of someone who can reach the API.
func (s *Server) jsonOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method != http.MethodPost {
			return next(c)
		}
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			return writeError(c, &apiError{Code: codeMediaType, Detail: "POST bodies must be sent with Content-Type: application/json"})
		}
		return next(c)
	}
}

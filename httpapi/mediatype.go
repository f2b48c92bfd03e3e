package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/txcoord/txcoord/api"
)

const codeMediaType = api.CodeMediaType

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

// decodeStrict decodes a small JSON object body into v, refusing unknown fields, and words
// a failure for the client: which field has the wrong type, not which Go struct it is.
func decodeStrict(body []byte, v any) *apiError {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		return nil
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return badRequest(fmt.Sprintf("invalid JSON: %q must be a %s, not a %s", te.Field, te.Type.Kind(), te.Value))
	}
	return badRequest("invalid JSON: " + strings.TrimPrefix(err.Error(), "json: "))
}

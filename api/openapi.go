package api

import _ "embed"

// OpenAPI is the OpenAPI 3.1 description of the coordinator's HTTP API (api/openapi.json
// in the repository): every route, parameter, request body, answer and the error body with
// its stable codes. Every node serves it at GET /v1/openapi.json. Tests keep it honest: a
// route registered without a description, or described without existing, fails them, and
// real answers of a running node are validated against it. The participant protocol has
// its own document, protocol.OpenAPI (participant/protocol).
//
//go:embed openapi.json
var OpenAPI []byte

// OpenAPIPath is where every node serves OpenAPI.
const OpenAPIPath = "/v1/openapi.json"

package protocol

import _ "embed"

// OpenAPI is the OpenAPI 3.1 description of the participant protocol (participant/
// protocol/openapi.json in the repository): the Prepare, Commit and Rollback calls the coordinator
// sends, their headers and body, and the replies it expects. A test validates the demo
// services' real replies, and the coordinator client's real calls, against it.
//
//go:embed openapi.json
var OpenAPI []byte

package api_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/parser"
	"go/token"
	"path/filepath"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/api"
)

// The package must stay importable without the server: the standard library only, and the
// participant wire protocol (shared inquiry types), which is itself standard library only
// (participant/imports_test.go enforces that).
func TestStdlibOnly(t *testing.T) {
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range af.Imports {
			p := strings.Trim(im.Path.Value, `"`)
			if p != "github.com/txcoord/txcoord/participant/protocol" && strings.Contains(strings.Split(p, "/")[0], ".") {
				t.Errorf("%s imports %s: package api must depend on the standard library only", f, p)
			}
		}
	}
}

func TestErrorIsByCode(t *testing.T) {
	err := fmt.Errorf("get: %w", &api.Error{Code: api.CodeNotFound, Detail: "no transaction \"x\"", HTTPStatus: 404})
	if !errors.Is(err, api.ErrNotFound) {
		t.Error("errors.Is(not_found error, ErrNotFound) = false")
	}
	if errors.Is(err, api.ErrConflict) {
		t.Error("errors.Is(not_found error, ErrConflict) = true")
	}
	for _, c := range api.Codes {
		if api.StatusOf(c) == 500 && c != api.CodeInternal {
			t.Errorf("code %s has no status", c)
		}
	}
	if api.StatusOf("something_new") != 500 {
		t.Error("an unknown code is not 500")
	}
}

func TestServiceBothForms(t *testing.T) {
	in := `["http://a/prepare",{"prepare":"http://b/p","commit":"http://b/c","rollback":"http://b/r"}]`
	var ss []api.Service
	if err := json.Unmarshal([]byte(in), &ss); err != nil {
		t.Fatal(err)
	}
	if ss[0].Prepare != "http://a/prepare" || ss[1].Rollback != "http://b/r" {
		t.Fatalf("decoded %+v", ss)
	}
	out, _ := json.Marshal(ss)
	if string(out) != in {
		t.Fatalf("round trip:\n got %s\nwant %s", out, in)
	}
	if err := json.Unmarshal([]byte(`[3]`), &ss); err == nil {
		t.Error("a number decoded as a service")
	}
}

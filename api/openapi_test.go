package api_test

import (
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/api"
)

// doc decodes api/openapi.json (the embedded copy every node serves).
func doc(t *testing.T) map[string]any {
	t.Helper()
	var d map[string]any
	if err := json.Unmarshal(api.OpenAPI, &d); err != nil {
		t.Fatalf("api/openapi.json is not JSON: %v", err)
	}
	if d["openapi"] != "3.1.0" {
		t.Fatalf("openapi = %v, want 3.1.0", d["openapi"])
	}
	return d
}

func schema(t *testing.T, d map[string]any, name string) map[string]any {
	t.Helper()
	s, ok := d["components"].(map[string]any)["schemas"].(map[string]any)[name].(map[string]any)
	if !ok {
		t.Fatalf("components.schemas.%s missing", name)
	}
	return s
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestOpenAPIErrorCodes: the document's ErrorCode lists exactly api.Codes, in order, each
// with the status api.StatusOf answers it with.
func TestOpenAPIErrorCodes(t *testing.T) {
	d := doc(t)
	ec := schema(t, d, "ErrorCode")
	var codes []string
	for _, c := range api.Codes {
		codes = append(codes, string(c))
	}
	if got := strs(ec["enum"]); !slices.Equal(got, codes) {
		t.Errorf("ErrorCode enum = %v, want api.Codes %v", got, codes)
	}
	st := ec["x-txcoord-status"].(map[string]any)
	for _, c := range api.Codes {
		if got, _ := st[string(c)].(float64); int(got) != api.StatusOf(c) {
			t.Errorf("x-txcoord-status[%s] = %v, want %d", c, st[string(c)], api.StatusOf(c))
		}
		if !strings.Contains(ec["description"].(string), "`"+string(c)+"`") {
			t.Errorf("ErrorCode description does not explain %s", c)
		}
	}
	if got := strs(schema(t, d, "TransactionStatus")["enum"]); !slices.Equal(got, api.Statuses) {
		t.Errorf("TransactionStatus enum = %v, want api.Statuses %v", got, api.Statuses)
	}
}

// wireFields returns the JSON names of t's fields and those without omitempty.
func wireFields(t reflect.Type) (all, always []string) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" || !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		all = append(all, name)
		if !strings.Contains(opts, "omitempty") {
			always = append(always, name)
		}
	}
	sort.Strings(all)
	sort.Strings(always)
	return all, always
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestOpenAPISchemasMatchTheWireTypes: each schema has exactly the properties of its Go
// type in package api, and an answer's schema requires exactly the fields that are always
// sent (no omitempty). A field added to a wire type without its description fails here.
func TestOpenAPISchemasMatchTheWireTypes(t *testing.T) {
	d := doc(t)
	answers := map[string]any{
		"Outcome": api.Outcome{}, "ParticipantView": api.ParticipantView{}, "TransactionView": api.TransactionView{},
		"TransactionList": api.TransactionList{}, "StuckList": api.StuckList{}, "ReadInfo": api.ReadInfo{},
		"ReadIndexAnswer": api.ReadIndexAnswer{}, "Member": api.Member{}, "ClusterStatus": api.ClusterStatus{},
		"Error": api.Error{}, "MemberHealth": api.MemberHealth{}, "AutopilotStatus": api.AutopilotStatus{},
	}
	for name, v := range answers {
		s := schema(t, d, name)
		all, always := wireFields(reflect.TypeOf(v))
		got := keys(s["properties"].(map[string]any))
		if name == "TransactionView" {
			// "archived" is added by the server (httpapi.ArchivedView) to a view answered
			// from the archive.
			got = slices.DeleteFunc(got, func(k string) bool { return k == "archived" })
		}
		if !slices.Equal(got, all) {
			t.Errorf("%s properties = %v, want the fields of api.%T %v", name, got, v, all)
		}
		req := strs(s["required"])
		sort.Strings(req)
		if name == "Error" {
			always = []string{"detail", "error"} // transactionId is omitempty
		}
		if !slices.Equal(req, always) {
			t.Errorf("%s required = %v, want the fields always sent %v", name, req, always)
		}
	}
	requests := map[string]any{"TransactionRequest": api.TransactionRequest{}, "OperatorRequest": api.OperatorRequest{}}
	for name, v := range requests {
		all, _ := wireFields(reflect.TypeOf(v))
		if got := keys(schema(t, d, name)["properties"].(map[string]any)); !slices.Equal(got, all) {
			t.Errorf("%s properties = %v, want the fields of api.%T %v", name, got, v, all)
		}
	}
	// The three membership bodies together have the fields of MembershipRequest.
	var union []string
	for _, n := range []string{"JoinRequest", "RemoveRequest", "TransferLeadershipRequest"} {
		union = append(union, keys(schema(t, d, n)["properties"].(map[string]any))...)
	}
	sort.Strings(union)
	union = slices.Compact(union)
	if all, _ := wireFields(reflect.TypeOf(api.MembershipRequest{})); !slices.Equal(union, all) {
		t.Errorf("membership request properties = %v, want the fields of api.MembershipRequest %v", union, all)
	}
	// A service object has the fields of api.Service.
	var obj map[string]any
	for _, alt := range schema(t, d, "Service")["oneOf"].([]any) {
		if m := alt.(map[string]any); m["type"] == "object" {
			obj = m
		}
	}
	if all, _ := wireFields(reflect.TypeOf(api.Service{})); obj == nil || !slices.Equal(keys(obj["properties"].(map[string]any)), all) {
		t.Errorf("Service object = %v, want the fields of api.Service %v", obj, all)
	}
}

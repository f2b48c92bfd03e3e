package protocol

import (
	"errors"
	"strings"
	"testing"
)

func TestParseOutcome(t *testing.T) {
	for _, tc := range []struct {
		body string
		want string // outcome, or "" for an error
	}{
		{`{"transactionId":"t1","outcome":"committed"}`, OutcomeCommitted},
		{`{"transactionId":"t1","outcome":"rolled_back"}`, OutcomeRolledBack},
		{` {"outcome":"pending","transactionId":"t1","extra":true} ` + "\n", OutcomePending},
		{``, ""},
		{`null`, ""},
		{`[]`, ""},
		{`committed`, ""},
		{`{"transactionId":"t1","outcome":"Committed"}`, ""},
		{`{"transactionId":"t1"}`, ""},
		{`{"transactionId":"t2","outcome":"committed"}`, ""},
		{`{"outcome":"committed"}`, ""},
		{`{"transactionId":"t1","outcome":"committed"} {}`, ""},
		{`{"transactionId":"t1","outcome":"committed","pad":"` + strings.Repeat("x", MaxReplyBytes) + `"}`, ""},
	} {
		o, err := ParseOutcome([]byte(tc.body), "t1")
		switch {
		case tc.want == "" && !errors.Is(err, ErrBadOutcome):
			t.Errorf("%.60q: %+v, %v; want an error wrapping ErrBadOutcome", tc.body, o, err)
		case tc.want != "" && (err != nil || o.Outcome != tc.want || o.TransactionID != "t1"):
			t.Errorf("%.60q: %+v, %v; want %s", tc.body, o, err, tc.want)
		}
	}
}

func TestInquiryURL(t *testing.T) {
	for _, tc := range []struct{ base, id, dl, want string }{
		{"http://n1:8081", "t1", "2026-12-02T06:30:00.500Z", "http://n1:8081/v1/transactions/t1/outcome?deadline=2026-12-02T06%3A30%3A00.500Z"},
		{"http://n1:8081/", "a/b c", "", "http://n1:8081/v1/transactions/a%2Fb%20c/outcome"},
		{"https://lb.example/txcoord", "t1", "", "https://lb.example/txcoord/v1/transactions/t1/outcome"},
	} {
		if got := InquiryURL(tc.base, tc.id, tc.dl); got != tc.want {
			t.Errorf("InquiryURL(%q, %q, %q) = %q, want %q", tc.base, tc.id, tc.dl, got, tc.want)
		}
	}
}

func TestValidateInquiry(t *testing.T) {
	if err := ValidateInquiry([]string{"http://n1:8081", "https://n2"}); err != nil {
		t.Errorf("valid list: %v", err)
	}
	if err := ValidateInquiry(nil); err != nil {
		t.Errorf("no list: %v", err)
	}
	for _, bad := range [][]string{{"n1:8081"}, {"http://n1?x=1"}, {"http://u@n1"}, make([]string, MaxInquiryURLs+1)} {
		if err := ValidateInquiry(bad); !errors.Is(err, ErrBadURL) {
			t.Errorf("%q: %v, want ErrBadURL", bad, err)
		}
	}
}

package protocol

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// The outcomes of an inquiry answer (Outcome.Outcome).
const (
	// OutcomeCommitted: the decision is commit; apply it exactly as a Commit call. Final.
	OutcomeCommitted = "committed"
	// OutcomeRolledBack: the decision is rollback, or the cluster logged a presumed abort
	// for a transaction it had no record of once its deadline passed; apply it exactly as
	// a Rollback call. Final.
	OutcomeRolledBack = "rolled_back"
	// OutcomePending: not decided yet; ask again after the answer's Retry-After seconds.
	OutcomePending = "pending"
)

// Outcome is the JSON body of a 200 answer to an inquiry,
// GET {base}/v1/transactions/{id}/outcome?deadline=...:
// {"transactionId": "...", "outcome": "committed" | "rolled_back" | "pending"}
// (docs/participant-protocol.md, "Inquiry").
type Outcome struct {
	TransactionID string `json:"transactionId"`
	Outcome       string `json:"outcome"`
}

// Final reports whether o is a decision (committed or rolled_back), which no later answer
// or phase-two call contradicts.
func (o Outcome) Final() bool {
	return o.Outcome == OutcomeCommitted || o.Outcome == OutcomeRolledBack
}

// MaxInquiryURLs bounds Request.Inquiry: a participant keeps the list with every vote. A
// cluster has a handful of voters; the bound leaves room for non-voters, and a longer list
// is a bad request (the whole Prepare is refused), so the coordinator must not send more.
const MaxInquiryURLs = 64

// InquiryPathFormat is the path of the inquiry route below a node's base URL; %s is the
// path-escaped transaction id.
const InquiryPathFormat = "/v1/transactions/%s/outcome"

// ErrBadOutcome is wrapped by every error ParseOutcome returns.
var ErrBadOutcome = errors.New("invalid inquiry answer")

// ValidateInquiry checks a Request.Inquiry list: at most MaxInquiryURLs URLs, each valid
// (ValidateURL) without a query string. The error wraps ErrBadURL.
func ValidateInquiry(urls []string) error {
	if len(urls) > MaxInquiryURLs {
		return fmt.Errorf("%w: %d inquiry URLs; the limit is %d", ErrBadURL, len(urls), MaxInquiryURLs)
	}
	for _, raw := range urls {
		u, err := ValidateURL(raw)
		if err != nil {
			return err
		}
		if u.RawQuery != "" {
			return fmt.Errorf("%w: %q: an inquiry URL is a base URL and takes no query string", ErrBadURL, raw)
		}
	}
	return nil
}

// InquiryURL returns the URL at which to ask node base for the outcome of transaction id
// whose Prepare carried deadline (Request.Deadline, sent back unchanged; omitted when
// empty). base is an entry of Request.Inquiry; a trailing slash is ignored.
func InquiryURL(base, id, deadline string) string {
	u := strings.TrimSuffix(base, "/") + fmt.Sprintf(InquiryPathFormat, url.PathEscape(id))
	if deadline != "" {
		u += "?deadline=" + url.QueryEscape(deadline)
	}
	return u
}

// ParseOutcome parses the body of a 200 answer to an inquiry about transaction id. It
// accepts a JSON object whose "outcome" is one of the three outcomes and whose
// "transactionId" is id (unknown fields are ignored, as in replies); anything else, an
// empty body, a body over MaxReplyBytes, trailing data, or an answer about another
// transaction, is an error wrapping ErrBadOutcome, and must not be applied.
func ParseOutcome(raw []byte, id string) (Outcome, error) {
	if len(raw) > MaxReplyBytes {
		return Outcome{}, fmt.Errorf("%w: body over %d bytes", ErrBadOutcome, MaxReplyBytes)
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return Outcome{}, fmt.Errorf("%w: empty body", ErrBadOutcome)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	var o Outcome
	if err := dec.Decode(&o); err != nil {
		return Outcome{}, fmt.Errorf("%w: not a JSON object: %v", ErrBadOutcome, err)
	}
	if dec.More() {
		return Outcome{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadOutcome)
	}
	switch o.Outcome {
	case OutcomeCommitted, OutcomeRolledBack, OutcomePending:
	default:
		return Outcome{}, fmt.Errorf("%w: outcome %q is not committed, rolled_back or pending", ErrBadOutcome, o.Outcome)
	}
	if o.TransactionID != id {
		return Outcome{}, fmt.Errorf("%w: answer is about transaction %q, not %q", ErrBadOutcome, o.TransactionID, id)
	}
	return o, nil
}

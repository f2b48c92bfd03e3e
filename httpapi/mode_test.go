package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/txcoord/txcoord/coordinator"
)

func TestModeField(t *testing.T) {
	for _, tc := range []struct {
		body string
		def  coordinator.Mode
		want coordinator.Mode // "" : a 400
	}{
		{`{"services":["` + flight + `"]}`, "", coordinator.ModeDefault},
		{`{"services":["` + flight + `"],"mode":null}`, "", coordinator.ModeDefault},
		{`{"services":["` + flight + `"],"mode":"fast"}`, "", coordinator.ModeFast},
		{`{"services":["` + flight + `"],"mode":"default"}`, coordinator.ModeFast, coordinator.ModeDefault},
		{`{"services":["` + flight + `"]}`, coordinator.ModeFast, coordinator.ModeFast},
		{`{"services":["` + flight + `"],"mode":"Fast"}`, "", ""},
		{`{"services":["` + flight + `"],"mode":""}`, "", ""},
		{`{"services":["` + flight + `"],"mode":1}`, "", ""},
		{`{"services":["` + flight + `"],"mode":"fast","mode":"fast"}`, "", ""},
	} {
		e := newEnv(t, Config{DefaultMode: tc.def})
		rec := e.post(tc.body)
		if tc.want == "" {
			d := checkRec(t, rec, http.StatusBadRequest, codeBadRequest)
			if !strings.Contains(d["detail"], "mode") {
				t.Errorf("%s: detail %q does not name the field", tc.body, d["detail"])
			}
			if len(e.sub.Calls()) != 0 {
				t.Errorf("%s: submitted", tc.body)
			}
			continue
		}
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", tc.body, rec.Code, rec.Body)
		}
		if calls := e.sub.Calls(); len(calls) != 1 || calls[0].Mode != tc.want {
			t.Errorf("%s (default %q): submitted %+v, want mode %q", tc.body, tc.def, calls, tc.want)
		}
	}
}

// TestFastModeNeedsLevel3: before the cluster enables feature level 3 a fast request is a
// 409 feature_unavailable and nothing is submitted; a default one goes through.
func TestFastModeNeedsLevel3(t *testing.T) {
	e := newEnv(t, Config{})
	gn := &gatedNode{fakeNode: e.node}
	gn.level.Store(2)
	e.srv = New(Config{}, gn, e.fsm, e.sub)
	d := checkRec(t, e.post(`{"services":["`+flight+`"],"mode":"fast"}`), http.StatusConflict, codeFeature)
	if !strings.Contains(d["detail"], "fast mode needs feature level 3") || len(e.sub.Calls()) != 0 {
		t.Fatalf("detail %q, %d submits", d["detail"], len(e.sub.Calls()))
	}
	if rec := e.post(`{"services":["` + flight + `"]}`); rec.Code != http.StatusOK {
		t.Fatalf("default mode: %d %s", rec.Code, rec.Body)
	}
}

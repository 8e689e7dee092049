package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	piledgerv1 "github.com/piledger/piledger/proto/piledger/v1"
)

// TestReadModelCommands runs where, timeline, due and export against a
// real `piledger serve`, after emitting a camera capture, a police access,
// a provision and an epidemic collection whose purpose then ends.
func TestReadModelCommands(t *testing.T) {
	addr, logs := startServe(t)
	env := map[string]string{"PILEDGER_SERVER": addr}
	ref := "C-3141592"
	d := func(days int) string {
		return time.Now().UTC().Truncate(24 * time.Hour).Add(time.Duration(days-200) * 24 * time.Hour).Format(time.RFC3339)
	}
	events := []string{
		fmt.Sprintf(`{"eventId": %q, "subjectRef": %q, "operation": "OPERATION_COLLECT", "occurredAt": %q, "processor": "city-police", "system": "gate-cam-7",
		  "dataCategories": ["face"], "purpose": "public-safety", "legalBasis": "legal-duty",
		  "retention": {"minimum": "2592000s", "keepFor": "7776000s"}, "place": {"kind": "public-street", "noticeSignRef": "sign-12"}}`,
			"019ab7c2-0000-7000-8000-00000000a001", ref, d(0)),
		fmt.Sprintf(`{"eventId": %q, "subjectRef": %q, "operation": "OPERATION_ACCESS", "occurredAt": %q, "processor": "city-police",
		  "dataCategories": ["face"], "access": {"actor": "officer-88", "reason": "case 2026-114", "kind": "ACCESS_KIND_RETRIEVE"}}`,
			"019ab7c2-0000-7000-8000-00000000a002", ref, d(1)),
		fmt.Sprintf(`{"eventId": %q, "subjectRef": %q, "operation": "OPERATION_PROVIDE", "occurredAt": %q, "processor": "city-police",
		  "dataCategories": ["face"], "purpose": "public-safety", "recipient": {"processor": "district-office"}, "retention": {"keepFor": "5184000s"}}`,
			"019ab7c2-0000-7000-8000-00000000a003", ref, d(2)),
		fmt.Sprintf(`{"eventId": %q, "subjectRef": %q, "operation": "OPERATION_COLLECT", "occurredAt": %q, "processor": "health-commission",
		  "dataCategories": ["health-code-status"], "purpose": "epidemic-prevention", "legalBasis": "public-health-emergency",
		  "retention": {"untilPurposeEnds": "epidemic-prevention"}}`,
			"019ab7c2-0000-7000-8000-00000000a004", ref, d(3)),
		fmt.Sprintf(`{"eventId": %q, "operation": "OPERATION_PURPOSE_ENDED", "occurredAt": %q, "processor": "health-commission", "purpose": "epidemic-prevention"}`,
			"019ab7c2-0000-7000-8000-00000000a005", d(150)),
	}
	code, out, errOut := cli(t, env, strings.Join(events, "\n"), "emit", "-f", "-", "-o", "json")
	if code != 0 {
		t.Fatalf("emit: exit %d\n%s", code, errOut)
	}
	var receipts piledgerv1.AppendEventsResponse
	if err := protojson.Unmarshal([]byte(out), &receipts); err != nil || len(receipts.GetReceipts()) != 5 {
		t.Fatalf("emit printed %q: %v", out, err)
	}
	last := fmt.Sprint(receipts.GetReceipts()[4].GetIndex())

	// where: the reference from stdin, waiting for the last receipt.
	code, out, errOut = cli(t, env, ref+"\n", "where", "-", "--min-index", last)
	if code != 0 {
		t.Fatalf("where: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"PROCESSOR", "city-police", "gate-cam-7", "face (sensitive)", "provided by city-police",
		"district-office", "health-commission", "purpose ended", "overdue", "keep for"} {
		if !strings.Contains(out, want) {
			t.Errorf("where table lacks %q:\n%s", want, out)
		}
	}
	code, out, errOut = cli(t, env, "", "where", ref, "-o", "json")
	var dm piledgerv1.DataMap
	if code != 0 || protojson.Unmarshal([]byte(out), &dm) != nil || len(dm.GetHoldings()) != 3 {
		t.Errorf("where -o json: exit %d, %d holdings\n%s%s", code, len(dm.GetHoldings()), out, errOut)
	}

	// timeline: newest first, the access with who and why.
	code, out, errOut = cli(t, env, "", "timeline", ref)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 5 || !strings.Contains(lines[1], "collect") || !strings.Contains(out, "retrieve by officer-88: case 2026-114") {
		t.Errorf("timeline: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, env, "", "timeline", ref, "-o", "json", "--limit", "2")
	if code != 0 || strings.Count(out, "\n") != 2 || !json.Valid([]byte(strings.Split(out, "\n")[0])) {
		t.Errorf("timeline -o json --limit 2: exit %d\n%s", code, out)
	}

	// due: every processor, then one.
	code, out, errOut = cli(t, env, "", "due")
	if code != 0 || !strings.Contains(out, "city-police") || !strings.Contains(out, "district-office") || !strings.Contains(out, "health-commission") {
		t.Errorf("due: exit %d\n%s%s", code, out, errOut)
	}
	code, out, _ = cli(t, env, "", "due", "--processor", "health-commission", "-o", "json")
	var h piledgerv1.Holding
	if code != 0 || protojson.Unmarshal([]byte(strings.TrimSpace(out)), &h) != nil || h.GetDeadlineBasis() != piledgerv1.DeadlineBasis_DEADLINE_BASIS_PURPOSE_ENDED {
		t.Errorf("due --processor health-commission -o json: exit %d\n%s", code, out)
	}

	// export: one JSON document by default.
	code, out, errOut = cli(t, env, "", "export", ref)
	var export piledgerv1.SubjectExport
	if code != 0 || protojson.Unmarshal([]byte(out), &export) != nil || len(export.GetEvents()) != 4 || len(export.GetDataMap().GetHoldings()) != 3 {
		t.Errorf("export: exit %d\n%s%s", code, out, errOut)
	}
	if code, out, _ = cli(t, env, "", "export", ref, "-o", "table"); code != 0 || !strings.Contains(out, "Events (4)") {
		t.Errorf("export -o table: exit %d\n%s", code, out)
	}

	// Mistakes: exit 2 for usage, 1 with advice for an unknown subject.
	for _, args := range [][]string{
		{"where"}, {"where", ref, "-o", "yaml"}, {"due", "--before", "tomorrow"}, {"timeline", ref, "--limit", "-1"}, {"due", "--processor", "City Police"},
	} {
		if code, _, errOut := cli(t, env, "", args...); code != exitInvalid {
			t.Errorf("%v: exit %d, want %d\n%s", args, code, exitInvalid, errOut)
		}
	}
	if code, _, errOut := cli(t, env, "", "where", "C-nobody"); code != exitFailure || !strings.Contains(errOut, "no events are recorded for this subject") {
		t.Errorf("unknown subject: exit %d\n%s", code, errOut)
	}
	if strings.Contains(logs.String(), ref) || strings.Contains(logs.String(), "C-nobody") {
		t.Errorf("server logs hold a subject reference:\n%s", logs)
	}
}

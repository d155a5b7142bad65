package storetest

import (
	"fmt"
	"testing"
	"time"

	"github.com/cakeai/cake-agents/agent/store"
)

func testAudit(t *testing.T, h *harness) {
	s, ctx := h.open(), t.Context()
	base := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	var all []*store.AuditEvent
	for i := range 25 {
		e := &store.AuditEvent{
			Time: base.Add(time.Duration(i) * time.Second), Actor: []string{"alice", "bob"}[i%2],
			Action: "session.create", Target: fmt.Sprintf("s%d", i%5), Outcome: "success",
			Detail: fmt.Sprintf("detail %d", i), RequestID: fmt.Sprintf("req-%d", i),
		}
		if err := s.AppendAudit(ctx, e); err != nil {
			t.Fatal(err)
		}
		if e.ID <= 0 || (len(all) > 0 && e.ID <= all[len(all)-1].ID) {
			t.Fatalf("event ids not increasing: %d after %v", e.ID, all)
		}
		all = append(all, e)
	}
	zero := &store.AuditEvent{Actor: "carol", Action: "token.create", Outcome: "denied"}
	before := time.Now().Add(-time.Second)
	if err := s.AppendAudit(ctx, zero); err != nil {
		t.Fatal(err)
	}
	if zero.Time.Before(before) {
		t.Errorf("zero Time not filled: %v", zero.Time)
	}
	all = append(all, zero)

	listAudit := func(f store.AuditFilter) []*store.AuditEvent {
		t.Helper()
		var out []*store.AuditEvent
		for {
			page, err := s.ListAudit(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			if f.Limit > 0 && len(page.Items) > f.Limit {
				t.Fatalf("page of %d with limit %d", len(page.Items), f.Limit)
			}
			out = append(out, page.Items...)
			if page.Continue == "" {
				return out
			}
			f.Continue = page.Continue
		}
	}
	got := listAudit(store.AuditFilter{Limit: 10})
	if len(got) != len(all) {
		t.Fatalf("listed %d events, want %d", len(got), len(all))
	}
	for i, e := range got {
		w := all[len(all)-1-i]
		if e.ID != w.ID || !e.Time.Equal(w.Time) || e.Actor != w.Actor || e.Action != w.Action || e.Target != w.Target ||
			e.Outcome != w.Outcome || e.Detail != w.Detail || e.RequestID != w.RequestID {
			t.Errorf("event %d = %+v, want %+v (newest first)", i, e, w)
		}
	}
	if got := listAudit(store.AuditFilter{Actor: "alice", Limit: 4}); len(got) != 13 || got[0].ID != all[24].ID {
		t.Errorf("actor filter: %d events", len(got))
	}
	got = listAudit(store.AuditFilter{Target: "s3", Limit: 2})
	if len(got) != 5 {
		t.Errorf("target filter: %d events, want 5", len(got))
	}
	for _, e := range got {
		if e.Target != "s3" {
			t.Errorf("target filter returned %+v", e)
		}
	}
	if got := listAudit(store.AuditFilter{Actor: "bob", Target: "s1"}); len(got) != 3 {
		t.Errorf("actor+target filter: %d events, want 3", len(got))
	}
	// Events appended while paging appear on no later page: newest-first pages
	// continue strictly below the last id seen.
	page, _ := s.ListAudit(ctx, store.AuditFilter{Limit: 5})
	if err := s.AppendAudit(ctx, &store.AuditEvent{Actor: "late"}); err != nil {
		t.Fatal(err)
	}
	rest := listAudit(store.AuditFilter{Limit: 5, Continue: page.Continue})
	if len(page.Items)+len(rest) != len(all) {
		t.Errorf("paging while appending: %d + %d events, want %d", len(page.Items), len(rest), len(all))
	}
	if p, err := s.ListAudit(ctx, store.AuditFilter{Actor: "nobody"}); err != nil || len(p.Items) != 0 || p.Continue != "" {
		t.Errorf("empty audit page = %+v, %v", p, err)
	}
}

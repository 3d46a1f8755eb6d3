package berth

import (
	"net/netip"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzLocalAnswer feeds arbitrary queries to the resolver's answerer for static entries:
// it answers well-formed A/AAAA questions for them with a message that parses and echoes
// the query's ID and question, and ignores everything else, never panicking.
func FuzzLocalAnswer(f *testing.F) {
	for _, tc := range []struct {
		name string
		t    dnsmessage.Type
	}{{"static.test.", dnsmessage.TypeA}, {"STATIC.TEST.", dnsmessage.TypeAAAA}, {"other.test.", dnsmessage.TypeA}, {"static.test.", dnsmessage.TypeMX}} {
		b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 7, RecursionDesired: true})
		b.StartQuestions()
		b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(tc.name), Type: tc.t, Class: dnsmessage.ClassINET})
		q, _ := b.Finish()
		f.Add(q)
	}
	s := New(WithHosts(map[string][]netip.Addr{"static.test": {netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")}}))
	defer s.Close()
	f.Fuzz(func(t *testing.T, q []byte) {
		ans := s.localAnswer(q)
		if ans == nil {
			return
		}
		var qp, ap dnsmessage.Parser
		qh, err := qp.Start(q)
		if err != nil {
			t.Fatalf("answered a query that does not parse: %v", err)
		}
		qq, _ := qp.Question()
		ah, err := ap.Start(ans)
		if err != nil {
			t.Fatalf("answer does not parse: %v", err)
		}
		aq, err := ap.Question()
		if err != nil || ah.ID != qh.ID || !ah.Response || aq != qq {
			t.Fatalf("answer header %+v question %+v, query %+v %+v", ah, aq, qh, qq)
		}
		if err := ap.SkipAllQuestions(); err != nil {
			t.Fatal(err)
		}
		for {
			rh, err := ap.AnswerHeader()
			if err == dnsmessage.ErrSectionDone {
				break
			}
			if err != nil || rh.Type != qq.Type || rh.Name != qq.Name {
				t.Fatalf("answer record %+v, %v; question %+v", rh, err, qq)
			}
			if err := ap.SkipAnswer(); err != nil {
				t.Fatal(err)
			}
		}
	})
}

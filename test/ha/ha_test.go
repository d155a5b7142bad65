package ha

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
)

// TestTwoReplicas installs the HA shape once and runs each scenario against it.
func TestTwoReplicas(t *testing.T) {
	in := setup(t, "cake-ha", testElection)
	t.Run("leader killed mid-burst", func(t *testing.T) { testLeaderKilled(t, in) })
	t.Run("conflicting operations", func(t *testing.T) { testConflictingOperations(t, in) })
	t.Run("quota race", func(t *testing.T) { testQuotaRace(t, in) })
}

// row is a session as the database holds it.
type row struct{ state, owner string }

// rows reads every session row straight from Postgres.
func (in *install) rows(ctx context.Context, db *pgx.Conn) (map[string]row, error) {
	rs, err := db.Query(ctx, `SELECT id, state, owner_id FROM sessions`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	out := map[string]row{}
	for rs.Next() {
		var id string
		var r row
		if err := rs.Scan(&id, &r.state, &r.owner); err != nil {
			return nil, err
		}
		out[id] = r
	}
	return out, rs.Err()
}

// settled checks that the database and the cluster agree, with nothing in flight:
// every session is Running with exactly one pod and its Secret, or Stopped or Failed
// without a pod, and no object exists without a row.
func (in *install) settled(ctx context.Context, db *pgx.Conn) error {
	rows, err := in.rows(ctx, db)
	if err != nil {
		return err
	}
	objs, err := sessionObjects(ctx, in.env.Kube, in.ns)
	if err != nil {
		return err
	}
	var bad []string
	for id, r := range rows {
		o := objs[id]
		switch apiv1.SessionState(r.state) {
		case apiv1.StateRunning:
			if has(o, "pod") != 1 || has(o, "terminating-pod") != 0 || has(o, "secret") != 1 {
				bad = append(bad, fmt.Sprintf("%s Running with [%s]", id, join(o)))
			}
		case apiv1.StateStopped, apiv1.StateFailed:
			if has(o, "pod")+has(o, "terminating-pod") != 0 {
				bad = append(bad, fmt.Sprintf("%s %s with [%s]", id, r.state, join(o)))
			}
		default:
			bad = append(bad, fmt.Sprintf("%s still %s", id, r.state))
		}
	}
	for id, o := range objs {
		if _, ok := rows[id]; !ok {
			bad = append(bad, fmt.Sprintf("%s has no row but [%s]", id, join(o)))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		if len(bad) > 12 {
			bad = append(bad[:12], fmt.Sprintf("and %d more", len(bad)-12))
		}
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// safe checks what must hold at every moment no API call is in flight, settled or
// not: a Stopped session has no pod at all (it turns Stopped only once its pod is gone),
// and nothing exists for a session without a row (the row goes last).
func (in *install) safe(ctx context.Context, db *pgx.Conn) error {
	// Rows first. With no call in flight nothing makes a row, nothing leaves Stopped,
	// and nothing makes objects for a missing or Stopped row; so what the rows say
	// still holds when the objects are listed. (The other order could catch a stop or a
	// delete finishing in between and cry wolf.)
	rows, err := in.rows(ctx, db)
	if err != nil {
		return err
	}
	objs, err := sessionObjects(ctx, in.env.Kube, in.ns)
	if err != nil {
		return err
	}
	var bad []string
	for id, o := range objs {
		r, ok := rows[id]
		switch {
		case !ok:
			bad = append(bad, fmt.Sprintf("%s has no row but [%s]", id, join(o)))
		case r.state == string(apiv1.StateStopped) && has(o, "pod")+has(o, "terminating-pod") > 0:
			bad = append(bad, fmt.Sprintf("%s is Stopped with [%s]", id, join(o)))
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// testLeaderKilled sends a burst of creates to both replicas and SIGKILLs the leader
// in the middle of it. Every acknowledged create must end Running with one pod (and
// only ever one), the other replica must take the Lease over, and nothing may be left
// half done: creates cut off in flight either never stored a row or end Running too.
func testLeaderKilled(t *testing.T, in *install) {
	ctx := t.Context()
	db := in.db(t)
	pods := watchPods(t, in.env.Kube, in.ns)
	leader, err := in.leader(ctx, "", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	survivor := 1 - leader
	t.Logf("leader %s, survivor %s", in.env.Agents[leader].Pod, in.env.Agents[survivor].Pod)

	const n, workers, killAfter = 60, 8, 20
	var (
		mu       sync.Mutex
		acked    []string // ids of 2xx answers
		cut      int      // sent, then the connection died: unknown outcome
		refused  int      // never reached a replica (connection refused), retried on the other
		others   []string
		next     atomic.Int32
		killOnce sync.Once
		killed   = make(chan struct{})
	)
	kill := func() {
		killOnce.Do(func() {
			in.env.Agents[leader].Stop(true)
			close(killed)
		})
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				target := (w + i) % 2
				for attempt := 0; ; attempt++ {
					s, err := in.admin[target].CreateSession(ctx, apiv1.CreateSessionRequest{Title: fmt.Sprintf("burst %d", i)})
					mu.Lock()
					switch {
					case err == nil:
						acked = append(acked, s.ID)
						if len(acked) == killAfter {
							go kill()
						}
					case errors.Is(err, syscall.ECONNREFUSED) && attempt == 0:
						// The request never left: as a Service would, send it to the other replica.
						refused++
						target = 1 - target
						mu.Unlock()
						continue
					case client.StatusCode(err) == 0:
						cut++
					default:
						others = append(others, err.Error())
					}
					mu.Unlock()
					break
				}
			}
		}()
	}
	wg.Wait()
	kill() // in case the burst ended before the threshold (it cannot, unless creates failed)
	<-killed
	if len(others) > 0 {
		t.Fatalf("creates answered with errors: %s", strings.Join(others, "; "))
	}
	t.Logf("%d creates: %d acknowledged, %d cut off in flight, %d refused and sent to the other replica", n, len(acked), cut, refused)

	// The survivor takes the Lease over (bounded wait; the time goes to make bench).
	if _, err := in.leader(ctx, in.env.Agents[leader].Pod, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 3*time.Minute, "every session Running with its pod, nothing orphaned", func() error { return in.settled(ctx, db) })

	rows, err := in.rows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	var lost, notRunning, running []string
	for _, id := range acked {
		r, ok := rows[id]
		switch {
		case !ok:
			lost = append(lost, id)
		case r.state != string(apiv1.StateRunning):
			notRunning = append(notRunning, id+" "+r.state)
		default:
			running = append(running, id)
		}
	}
	if len(lost) > 0 || len(notRunning) > 0 {
		t.Fatalf("acknowledged sessions lost: %v; not Running: %v", lost, notRunning)
	}
	// A create cut off in flight may have been stored; then it must have been finished.
	for id, r := range rows {
		if r.state != string(apiv1.StateRunning) {
			t.Errorf("session %s (cut off in flight) ended %s, not Running", id, r.state)
		}
	}
	// Exactly one pod per session, ever: no duplicate, no recreation.
	var recreated []string
	for id := range rows {
		if c := pods.created(id); c != 1 {
			recreated = append(recreated, fmt.Sprintf("%s: %d pods", id, c))
		}
	}
	dups := pods.duplicates()
	if len(dups) > 0 || len(recreated) > 0 {
		t.Fatalf("duplicate pods %v; sessions whose pod was made more than once: %v", dups, recreated)
	}
	stored := len(rows) - len(acked)
	figure(t, "leader killed", "%d creates over 2 replicas, leader SIGKILLed mid-burst: %d acknowledged, %d Running, %d duplicate pods, %d lost (%d cut off in flight, %d of them stored and Running, none half done)",
		n, len(acked), len(running), len(dups), len(lost), cut, stored)

	// Back to two replicas for the next scenario; the restarted one follows.
	if err := in.env.Agents[leader].Start(ctx); err != nil {
		t.Fatal(err)
	}
	in.deleteAll(t, db)
}

// deleteAll deletes every session through the API and waits until nothing is left.
func (in *install) deleteAll(t *testing.T, db *pgx.Conn) {
	t.Helper()
	ctx := t.Context()
	rows, err := in.rows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for id := range rows {
		if _, err := in.admin[0].DeleteSession(ctx, id); err != nil && !client.IsNotFound(err) {
			t.Fatalf("delete %s: %v", id, err)
		}
	}
	waitFor(t, 2*time.Minute, "every session deleted", func() error {
		rows, err := in.rows(ctx, db)
		if err != nil {
			return err
		}
		if len(rows) > 0 {
			return fmt.Errorf("%d rows left", len(rows))
		}
		return in.settled(ctx, db)
	})
}

// op is one lifecycle call on a session through one replica.
type op struct {
	name string
	call func(ctx context.Context, c *client.Client, id string) error
}

var (
	stopOp = op{"stop", func(ctx context.Context, c *client.Client, id string) error {
		_, err := c.StopSession(ctx, id)
		return err
	}}
	startOp = op{"start", func(ctx context.Context, c *client.Client, id string) error {
		_, err := c.StartSession(ctx, id)
		return err
	}}
	deleteOp = op{"delete", func(ctx context.Context, c *client.Client, id string) error {
		_, err := c.DeleteSession(ctx, id)
		return err
	}}
)

// testConflictingOperations sends the same session's stop, start and delete to both
// replicas at once, round after round. No answer may be a 5xx (a 409 that says why is
// fine), and once things settle the database and the pods must agree, with never two
// pods for one session.
func testConflictingOperations(t *testing.T, in *install) {
	ctx := t.Context()
	db := in.db(t)
	pods := watchPods(t, in.env.Kube, in.ns)
	const sessions, rounds = 6, 12
	var ids []string
	for i := range sessions {
		s, err := in.admin[i%2].CreateSession(ctx, apiv1.CreateSessionRequest{Title: fmt.Sprintf("conflict %d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, s.ID)
	}
	waitFor(t, 2*time.Minute, "the sessions Running", func() error { return in.settled(ctx, db) })

	rng := rand.New(rand.NewPCG(1, 2))
	var (
		mu       sync.Mutex
		statuses = map[string]int{} // "stop 202", "start 409", ...
		bad      []string
		calls    int
	)
	record := func(o op, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		code := http.StatusAccepted
		if err != nil {
			code = client.StatusCode(err)
		}
		statuses[fmt.Sprintf("%s %d", o.name, code)]++
		var se *client.StatusError
		switch {
		case err == nil, code == http.StatusNotFound:
		case code == http.StatusConflict && errors.As(err, &se) && se.Err.Body.Message != "":
		default:
			bad = append(bad, fmt.Sprintf("%s: %v", o.name, err))
		}
	}
	pairs := [][2]op{{stopOp, startOp}, {startOp, stopOp}, {stopOp, stopOp}, {startOp, startOp}}
	for r := range rounds {
		last := r == rounds-1
		var wg sync.WaitGroup
		for _, id := range ids {
			p := pairs[rng.IntN(len(pairs))]
			if last {
				// Delete through both replicas, with a start racing it on one of them.
				p = [2]op{deleteOp, deleteOp}
				wg.Add(1)
				go func() { defer wg.Done(); record(startOp, startOp.call(ctx, in.admin[0], id)) }()
			}
			for side, o := range p {
				wg.Add(1)
				go func() { defer wg.Done(); record(o, o.call(ctx, in.admin[side], id)) }()
			}
		}
		wg.Wait()
		if len(bad) > 0 {
			t.Fatalf("round %d: answers other than 2xx, 404 or 409 with a reason: %s", r, strings.Join(bad, "; "))
		}
		// With every call answered, only the reconciler acts, and it never stops a
		// session nor makes a pod for a stopped one: so what the calls left must already
		// be safe, before anything repairs it.
		if err := in.safe(ctx, db); err != nil {
			t.Fatalf("round %d: right after the calls: %v", r, err)
		}
		// Then let everything finish and compare the database with the cluster.
		waitFor(t, 2*time.Minute, fmt.Sprintf("round %d settled", r), func() error { return in.settled(ctx, db) })
	}
	rows, err := in.rows(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if _, ok := rows[id]; ok {
			t.Errorf("session %s survived being deleted through both replicas", id)
		}
	}
	if dups := pods.duplicates(); len(dups) > 0 {
		t.Fatalf("sessions with two pods at once: %v", dups)
	}
	var keys []string
	for k := range statuses {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var summary []string
	conflicts := 0
	for _, k := range keys {
		summary = append(summary, fmt.Sprintf("%s×%d", k, statuses[k]))
		if strings.HasSuffix(k, " 409") {
			conflicts += statuses[k]
		}
	}
	t.Logf("answers: %s", strings.Join(summary, ", "))
	figure(t, "conflicting operations", "%d rounds of stop/start/delete of %d sessions through both replicas at once: %d calls, 0 5xx, %d 409 with a reason, nothing unsafe after any round, database and pods agree once settled, 0 duplicate pods",
		rounds, sessions, calls, conflicts)
}

// testQuotaRace: 1,000 creates of one user at once, half through each replica, with
// sessions.maxActivePerUser 5. Exactly 5 are stored and get pods, never more; the rest
// are told 429 with the quota message.
func testQuotaRace(t *testing.T, in *install) {
	ctx := t.Context()
	db := in.db(t)
	pods := watchPods(t, in.env.Kube, in.ns)
	const n = 1000
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		codes  = map[int]int{}
		owner  string
		msgs   = map[string]int{}
		start  = make(chan struct{})
		unseen []string
	)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			s, err := in.alice[i%2].CreateSession(ctx, apiv1.CreateSessionRequest{Title: fmt.Sprintf("quota %d", i)})
			mu.Lock()
			defer mu.Unlock()
			var se *client.StatusError
			switch {
			case err == nil:
				codes[http.StatusCreated]++
				owner = s.OwnerID
			case errors.As(err, &se):
				codes[se.StatusCode]++
				msgs[se.Err.Body.Code+": "+se.Err.Body.Message]++
			default:
				unseen = append(unseen, err.Error())
			}
		}()
	}
	close(start)
	wg.Wait()
	if len(unseen) > 0 {
		t.Fatalf("%d creates failed without an answer: %s", len(unseen), unseen[0])
	}
	wantMsg := fmt.Sprintf("%s: you already have the maximum of %d active sessions: stop or delete one first", apiv1.CodeQuotaExceeded, quota)
	if codes[http.StatusCreated] != quota || codes[http.StatusTooManyRequests] != n-quota || msgs[wantMsg] != n-quota || len(msgs) != 1 {
		t.Fatalf("%d creates with a quota of %d: answers %v, messages %v; want %d × 201 and %d × 429 %q",
			n, quota, codes, msgs, quota, n-quota, wantMsg)
	}

	// The database: exactly the quota, all active.
	var active, total int
	err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('Pending','Starting','Running')), count(*) FROM sessions WHERE owner_id = $1`, owner).Scan(&active, &total)
	if err != nil {
		t.Fatal(err)
	}
	if active != quota || total != quota {
		t.Fatalf("the database holds %d sessions of the user, %d active; want %d and %d", total, active, quota, quota)
	}
	waitFor(t, 2*time.Minute, "the user's sessions Running", func() error { return in.settled(ctx, db) })
	// The cluster: as many pods, and never more at any moment of the race.
	list, err := in.env.Kube.CoreV1().Pods(in.ns).List(ctx, metav1.ListOptions{LabelSelector: apiv1.LabelOwnerID + "=" + owner})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != quota || pods.maxOwnerLive(owner) != quota {
		t.Fatalf("the user has %d pods (at most %d at once during the race), want %d", len(list.Items), pods.maxOwnerLive(owner), quota)
	}

	// Starts make sessions active too: stop two, then race creates against starts of
	// the stopped ones, through both replicas. Two of them win, in any mix.
	page, err := in.alice[0].ListSessions(ctx, client.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	stopped := []string{page.Items[0].ID, page.Items[1].ID}
	for i, id := range stopped {
		if _, err := in.alice[i].StopSession(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 2*time.Minute, "two sessions Stopped", func() error { return in.settled(ctx, db) })
	const creates, starts = 400, 100
	answers := map[string]int{}
	var wg2 sync.WaitGroup
	start2 := make(chan struct{})
	for i := range creates + starts {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			<-start2
			c := in.alice[i%2]
			var what string
			var err error
			if i%5 != 4 { // one start in five, interleaved
				what = "create"
				_, err = c.CreateSession(ctx, apiv1.CreateSessionRequest{Title: fmt.Sprintf("quota again %d", i)})
			} else {
				what = "start"
				_, err = c.StartSession(ctx, stopped[(i/10)%2]) // each through both replicas
			}
			mu.Lock()
			defer mu.Unlock()
			answers[fmt.Sprintf("%s %d", what, client.StatusCode(err))]++
		}()
	}
	close(start2)
	wg2.Wait()
	for k := range answers {
		switch k {
		case "create 0", "create 429", "start 0", "start 429":
		default:
			t.Fatalf("creates racing starts: unexpected answers %v", answers)
		}
	}
	if err := db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE state IN ('Pending','Starting','Running')), count(*) FROM sessions WHERE owner_id = $1`, owner).Scan(&active, &total); err != nil {
		t.Fatal(err)
	}
	if active != quota {
		t.Fatalf("after creates raced starts the user has %d active sessions, want %d (answers %v)", active, quota, answers)
	}
	waitFor(t, 2*time.Minute, "the user's sessions settled", func() error { return in.settled(ctx, db) })
	list2, err := in.env.Kube.CoreV1().Pods(in.ns).List(ctx, metav1.ListOptions{LabelSelector: apiv1.LabelOwnerID + "=" + owner})
	if err != nil {
		t.Fatal(err)
	}
	if len(list2.Items) != quota || pods.maxOwnerLive(owner) != quota {
		t.Fatalf("after creates raced starts the user has %d pods (at most %d at once), want %d", len(list2.Items), pods.maxOwnerLive(owner), quota)
	}
	t.Logf("creates racing starts: %v", answers)
	figure(t, "quota race", "%d creates over 2 replicas: %d active in the database, %d pods (%d refused with 429); then %d creates racing %d starts of stopped sessions: still %d active, %d pods",
		n, quota, len(list.Items), codes[http.StatusTooManyRequests], creates, starts, active, len(list2.Items))
	in.deleteAll(t, db)
}

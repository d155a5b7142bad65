package tunnel

import (
	"bufio"
	"context"
	"io"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

func roundTrip(conn net.Conn, line string) (string, error) {
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second)) // ignored by streams; the test timeout bounds it
	if _, err := io.WriteString(conn, line); err != nil {
		return "", err
	}
	return bufio.NewReader(conn).ReadString('\n')
}

func TestForwarderReconnectsAfterTheConnectionDrops(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	echo := testcluster.EchoServer(t, "pod: ")
	c.ForwardPodPort(t, ns, "opencode", apiv1.OpenCodePort, echo.Addr().String())
	c.RunPod(t, ns, "opencode", nil)

	fwd, err := NewForwarder(c.RESTConfig(), ns, "opencode")
	if err != nil {
		t.Fatal(err)
	}
	defer fwd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := fwd.DialContext(ctx, apiv1.OpenCodePort)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(conn, "hello\n"); err != nil || got != "pod: hello\n" {
		t.Fatalf("first connection: %q, %v", got, err)
	}

	// The laptop sleeps: the upgraded connection to the API server is gone.
	fwd.mu.Lock()
	first := fwd.conn
	fwd.mu.Unlock()
	_ = first.Close()
	if _, err := roundTrip(conn, "again\n"); err == nil {
		t.Fatal("a stream of the closed connection still works")
	}

	// The redial must succeed. (kwok, the fake kubelet here, can hold a new stream for
	// its pod for up to 30 s after a connection drops abruptly, so no tighter bound.)
	dialCtx, dialCancel := context.WithTimeout(ctx, 50*time.Second)
	defer dialCancel()
	conn2, err := fwd.DialContext(dialCtx, apiv1.OpenCodePort)
	if err != nil {
		t.Fatalf("dial after the drop: %v", err)
	}
	defer conn2.Close()
	if got, err := roundTrip(conn2, "back\n"); err != nil || got != "pod: back\n" {
		t.Fatalf("after reconnecting: %q, %v", got, err)
	}
	fwd.mu.Lock()
	second := fwd.conn
	fwd.mu.Unlock()
	if second == first {
		t.Error("the dropped connection was reused")
	}

	// Nothing listens behind another port: the kubelet's reason comes back on Read.
	conn3, err := fwd.DialContext(ctx, 9)
	if err != nil {
		t.Fatalf("dial port 9: %v", err)
	}
	defer conn3.Close()
	if _, err := roundTrip(conn3, "x\n"); err == nil {
		t.Error("a port nothing forwards to answered")
	}
}

func TestAgentTunnelFollowsTheAgentToANewPod(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	labels := map[string]string{apiv1.LabelName: apiv1.AgentAppName, apiv1.LabelComponent: apiv1.AgentComponent}
	oldAgent := testcluster.EchoServer(t, "old: ")
	c.ForwardPodPort(t, ns, "agent-old", apiv1.AgentHTTPSPort, oldAgent.Addr().String())
	c.RunPod(t, ns, "agent-old", labels)

	at := NewAgentTunnel(c.AdminClient(), c.RESTConfig(), ns)
	defer at.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := at.DialContext(ctx, "tcp", "ignored:443")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := roundTrip(conn, "hi\n"); err != nil || got != "old: hi\n" {
		t.Fatalf("old agent: %q, %v", got, err)
	}
	conn.Close()
	if at.Pod() != "agent-old" {
		t.Fatalf("pod = %q", at.Pod())
	}

	// A rollout: the new pod comes up, the old one goes away and stops answering.
	newAgent := testcluster.EchoServer(t, "new: ")
	c.ForwardPodPort(t, ns, "agent-new", apiv1.AgentHTTPSPort, newAgent.Addr().String())
	c.RunPod(t, ns, "agent-new", labels)
	zero := int64(0)
	if err := c.AdminClient().CoreV1().Pods(ns).Delete(ctx, "agent-old", metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	oldAgent.Close()

	// The dial that notices may fail; a later one must reach the new agent.
	var got string
	for attempt := 0; attempt < 5 && got != "new: hi\n"; attempt++ {
		conn, err := at.DialContext(ctx, "tcp", "ignored:443")
		if err != nil {
			t.Logf("attempt %d: dial: %v", attempt, err)
			time.Sleep(500 * time.Millisecond)
			continue
		}
		got, err = roundTrip(conn, "hi\n")
		conn.Close()
		if err != nil {
			t.Logf("attempt %d: %v", attempt, err)
		}
	}
	if got != "new: hi\n" {
		t.Fatalf("never reached the new agent; last answer %q", got)
	}
	if at.Pod() != "agent-new" {
		t.Errorf("pod = %q, want agent-new", at.Pod())
	}
}

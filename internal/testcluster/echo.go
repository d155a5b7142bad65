package testcluster

import (
	"bufio"
	"io"
	"net"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EchoServer listens on a loopback port and answers every line it reads with prefix and
// the line: the process behind a pod's port in port-forward tests (see ForwardPodPort),
// where the prefix tells which pod answered. It stops when the test ends.
func EchoServer(t testing.TB, prefix string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, prefix+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln
}

// RunPod creates pod ns/name with labels and one container whose image is never pulled
// (kwok runs it without a runtime), and waits until it is Running and Ready. Its ports
// lead wherever ForwardPodPort said, so call that first.
func (c *Cluster) RunPod(t testing.TB, ns, name string, labels map[string]string) *corev1.Pod {
	t.Helper()
	no := false
	_, err := c.client.CoreV1().Pods(ns).Create(testContext(t), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.PodSpec{AutomountServiceAccountToken: &no,
			Containers: []corev1.Container{{Name: "main", Image: "example.invalid/never-pulled:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return c.WaitForPod(t, ns, name, PodRunning)
}

// Package testcluster runs a real Kubernetes control plane on 127.0.0.1 for tests: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, with kwok playing the kubelet of one
// fake node, so pods go Running in well under a second without a container runtime, and
// port-forward and logs to those pods reach local processes and files.
//
// The binaries come from hack/build-cluster.sh (`make cluster-binaries`), cached with version
// stamps under $CACHE_DIR/cluster/bin. Start generates a CA and every certificate, key and
// kubeconfig in Go, starts the processes on free loopback ports and waits until the fake node is
// Ready and the default ServiceAccount exists (≈10 s). Processes run in their own process group;
// those a test binary starts get SIGKILL when it dies, however it dies, so none stray.
//
// Tests use Get, which returns one cluster per test binary: the running cluster named by
// $CAKE_TESTCLUSTER_DIR (`make test` starts one with `testcluster up` and shares it with every
// package), or else one it starts on first use. Stop it from TestMain:
//
//	func TestMain(m *testing.M) { testcluster.Main(m) }
//
//	func TestSomething(t *testing.T) {
//		c := testcluster.Get(t) // skips under -short
//		ns := c.NewNamespace(t, nil)
//		c.ForwardPodPort(t, ns, "web", 4096, srv.Listener.Addr().String())
//		...
//	}
//
// Because several test binaries may share one cluster at once, tests work in their own
// namespaces and name cluster-scoped objects uniquely.
package testcluster

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/cakeai/cake-agents/internal/testcluster"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/tunnel"
	"github.com/cakeai/cake-agents/test/nodeenv"
)

// The release and namespaces of the real-node demo: the plugin's default agent namespace, and
// sessions in a restricted namespace of their own, as the install guide suggests.
const (
	demoNamespace    = "cake-agents"
	demoSessionNS    = "agent-sessions"
	demoCABundleName = "git-ca"
)

// Listeners the host side opens and passes to the process inside the namespaces: the
// apiserver's and the web UI's (file descriptors 3 and 4 there).
const (
	fdAPIServer = 3
	fdUI        = 4
)

// runRealNode re-executes the demo inside network and mount namespaces of its own (the node's
// bridge and pod addresses are private-range and must stay there) with two loopback listeners
// of the host, then runs the cluster, the chart and the demo session inside.
func runRealNode(ctx context.Context, o options) error {
	inside, err := testcluster.InPrivateNamespaces()
	if err != nil {
		return err
	}
	if inside {
		return realNodeInside(ctx, o)
	}
	if err := testcluster.CanRunRealNode(); err != nil {
		return err
	}
	var files []*os.File
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		f, err := ln.(*net.TCPListener).File()
		if err != nil {
			return err
		}
		_ = ln.Close() // f is a duplicate: the socket stays open through it
		files = append(files, f)
	}
	code, err := testcluster.Reexec(testcluster.ReexecOptions{ExtraFiles: files, ForwardInterrupt: true})
	if err != nil {
		return err
	}
	if code != 0 {
		os.Exit(code)
	}
	return nil
}

func realNodeInside(ctx context.Context, o options) error {
	apiLn, err := net.FileListener(os.NewFile(fdAPIServer, "apiserver listener"))
	if err != nil {
		return fmt.Errorf("the apiserver listener from the host: %w", err)
	}
	uiLn, err := net.FileListener(os.NewFile(fdUI, "web UI listener"))
	if err != nil {
		return fmt.Errorf("the web UI listener from the host: %w", err)
	}
	index := o.images
	if index == "" {
		index = nodeenv.DefaultIndex()
	}
	imgs, err := nodeenv.LoadImages(index)
	if err != nil {
		return err
	}
	dir := filepath.Join(o.WorkDir, "node")
	// The previous run's cluster died with its namespaces; its files are of no use.
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, "demo: "+format+"\n", args...) }
	logf("starting a cluster with a real node (kubelet, containerd, runc) and importing the images ...")
	began := time.Now()
	c, err := testcluster.Start(ctx, testcluster.Options{
		Dir:      filepath.Join(dir, "cluster"),
		Timeout:  5 * time.Minute,
		Logf:     logf,
		RealNode: &testcluster.RealNodeOptions{Images: imgs.Archives(), PauseImage: imgs.Name(nodeenv.ImgPause)},
	})
	if err != nil {
		return fmt.Errorf("start the cluster (logs in %s): %w", filepath.Join(dir, "cluster", "logs"), err)
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "\ndemo: stopping the cluster ...")
		if err := c.Stop(); err != nil {
			logf("stop: %v (the node's files are kept in %s)", err, dir)
			return
		}
		// The node's images and containers take gigabytes; the next run starts afresh anyway.
		_ = os.RemoveAll(dir)
	}()
	logf("cluster Ready in %s", time.Since(began).Round(time.Second))

	// The host reaches the apiserver through its loopback listener.
	apiAddr, err := hostPort(c.Server())
	if err != nil {
		return err
	}
	go func() {
		_ = tunnel.ServeTCP(ctx, apiLn, func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", apiAddr)
		}, func(err error) { logf("apiserver proxy: %v", err) })
	}()
	userKubeconfig := filepath.Join(o.WorkDir, "kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig(), userKubeconfig, "https://"+apiLn.Addr().String()); err != nil {
		return err
	}
	defer os.Remove(userKubeconfig) // it names a listener that dies with this process

	kube := c.AdminClient()
	logf("starting the fake model and a git server in namespace %s ...", nodeenv.InfraNamespace)
	inf, err := nodeenv.StartInfra(ctx, kube, imgs, filepath.Join(dir, "git"), "demo", demoRepo)
	if err != nil {
		return err
	}
	logf("installing charts/cake-agents with helm (the agent in its image) ...")
	if err := helmInstall(ctx, o, c.Kubeconfig(), dir, inf); err != nil {
		return fmt.Errorf("%w\n%s", err, nodeenv.PodLogs(kube, demoNamespace, "app.kubernetes.io/instance="+apiv1.AgentAppName))
	}
	if _, err := kube.CoreV1().ConfigMaps(demoSessionNS).Create(ctx, inf.CABundle(demoCABundleName), metav1.CreateOptions{}); err != nil {
		return err
	}
	id, err := createSession(ctx, o, c.Kubeconfig(), inf.RepoURL, "--agent-namespace", demoNamespace)
	if err != nil {
		return fmt.Errorf("%w\n%s", err, nodeenv.PodLogs(kube, demoSessionNS, "app.kubernetes.io/name=cake-agents-session"))
	}

	// The web UI: the host's listener reaches the agent's plain-HTTP port through its
	// Service (kube-proxy), as an authenticating proxy in front of it would.
	svc, err := kube.CoreV1().Services(demoNamespace).Get(ctx, apiv1.AgentAppName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var httpPort int32
	for _, p := range svc.Spec.Ports {
		if p.Name == "http" {
			httpPort = p.Port
		}
	}
	uiAddr := net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(httpPort)))
	go func() {
		_ = tunnel.ServeTCP(ctx, uiLn, func(ctx context.Context) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", uiAddr)
		}, func(err error) { logf("web UI proxy: %v", err) })
	}()
	uiLogin := "sign in with a personal access token"
	if tok, err := createToken(ctx, c); err == nil {
		uiLogin = "sign in with the token " + tok.Token
	} else {
		logf("no token for the web UI: %v", err)
	}
	printNext("a local cluster with a real node (the agent and sessions run in their images)", id, userKubeconfig, userPath(o),
		"http://"+uiLn.Addr().String(), uiLogin)
	<-ctx.Done()
	return nil
}

// helmInstall installs the chart as a platform team would: sessions in a restricted namespace
// the chart creates, the model behind litellm.baseURL, and the git server's CA for sessions.
func helmInstall(ctx context.Context, o options, kubeconfig, dir string, inf *nodeenv.Infra) error {
	args := append([]string{"upgrade", "--install", apiv1.AgentAppName, o.Chart,
		"--namespace", demoNamespace, "--create-namespace", "--wait", "--timeout", "5m",
		"--set", "sessionNamespace.name=" + demoSessionNS,
		"--set", "sessionNamespace.create=true",
		"--set", "litellm.baseURL=" + inf.ModelURL,
		"--set", "sessions.defaultModel=fake-model",
		"--set", "sessions.caBundle.configMapName=" + demoCABundleName,
	}, nodeenv.ImageValues...)
	cmd := exec.CommandContext(ctx, o.Helm, args...)
	home := filepath.Join(dir, "helm")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig,
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("helm upgrade --install: %w\n%s", err, out)
	}
	return nil
}

// createToken makes a personal access token for the web UI, as the cluster admin, through the
// plugin's own path to the agent (a port-forward to its pod, verified with its serving CA).
func createToken(ctx context.Context, c *testcluster.Cluster) (*apiv1.Token, error) {
	pool, err := tunnel.ServingCA(ctx, c.AdminClient(), demoNamespace)
	if err != nil {
		return nil, err
	}
	agent := tunnel.NewAgentTunnel(c.AdminClient(), c.RESTConfig(), demoNamespace)
	defer agent.Close()
	hc, err := tunnel.HTTPClient(c.RESTConfig(), pool, agent.DialContext)
	if err != nil {
		return nil, err
	}
	cl, err := client.New(tunnel.AgentURL(demoNamespace), hc)
	if err != nil {
		return nil, err
	}
	return cl.CreateToken(ctx, demoToken())
}

// writeKubeconfig copies the admin kubeconfig with every cluster's server set to server.
func writeKubeconfig(from, to, server string) error {
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		return err
	}
	if len(cfg.Clusters) == 0 {
		return errors.New(from + " names no cluster")
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	return clientcmd.WriteToFile(*cfg, to)
}

// hostPort is the host:port of an https URL.
func hostPort(server string) (string, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Port() == "" {
		return "", fmt.Errorf("apiserver URL %q is not https://host:port", server)
	}
	return u.Host, nil
}

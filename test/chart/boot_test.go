package chart

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	appsv1 "k8s.io/api/apps/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/yaml"

	"github.com/cakeai/cake-agents/internal/ownedproc"
	"github.com/cakeai/cake-agents/internal/testcluster"
	"github.com/cakeai/cake-agents/internal/testpg"
	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
	"github.com/cakeai/cake-agents/pkg/client"
	"github.com/cakeai/cake-agents/plugin/tunnel"
	"github.com/cakeai/cake-agents/test/agentpod"
	"github.com/cakeai/cake-agents/test/fakelitellm"
)

// TestEveryValuesFileBootsTheRealAgent is the fast tier's proof that each supported shape of
// the chart starts a working agent. kwok reports every pod Ready without running anything, so
// for the install guide's values file and every ci/ values file this test renders the chart,
// applies the objects for real (RBAC and ServiceAccount included), provides what the values
// expect to exist already (the database Secret pointing at a real Postgres, the Secret an
// External Secrets operator would write, a TLS Secret, integration Secrets), and runs the real
// agent binary as the kubelet would run the rendered Deployment's pod: its exact environment
// with Secrets and the downward API resolved, its args, its volumes, and a token of the chart's
// ServiceAccount (test/agentpod). The agent must answer its readiness probe, and one session
// created through the API must produce its pod, with the images from the values, in the
// namespace the values choose.
func TestEveryValuesFileBootsTheRealAgent(t *testing.T) {
	c := testcluster.Get(t)
	installCRDs(t, c)
	agent := buildAgent(t)
	img, err := controlPlaneImage(repoRoot(t), agent)
	if err != nil {
		t.Fatal(err)
	}
	for _, vf := range valuesFiles(t) {
		t.Run(vf.name, func(t *testing.T) { bootValuesFile(t, c, img, vf) })
	}
}

// buildAgent builds the agent from this tree (never a stale bin/) into the test's temp dir.
func buildAgent(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/agent")
	cmd.Dir, cmd.Env = repoRoot(t), append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/agent: %v\n%s", err, b)
	}
	return out
}

// controlPlaneImage reads what the Dockerfile's control-plane stage gives the agent's process
// (ENTRYPOINT, CMD, WORKDIR, ENV) so the local process starts the way the image would; the
// built binary stands in for the image's /usr/local/bin/agent.
func controlPlaneImage(root, agent string) (agentpod.Image, error) {
	img := agentpod.Image{
		// The base image's PATH (the Debian default); the stage sets no PATH of its own.
		Env:      []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Binaries: map[string]string{"agent": agent, "/usr/local/bin/agent": agent},
	}
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		return img, err
	}
	defer f.Close()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		instr, rest, _ := strings.Cut(line, " ")
		switch strings.ToUpper(instr) {
		case "FROM":
			in = strings.HasSuffix(strings.ToLower(line), " as control-plane")
		case "ENTRYPOINT", "CMD":
			if !in {
				continue
			}
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil {
				return img, fmt.Errorf("Dockerfile control-plane: %s %s is not in exec form; teach the boot test its shell form", instr, rest)
			}
			if strings.EqualFold(instr, "ENTRYPOINT") {
				img.Entrypoint = argv
			} else {
				img.Cmd = argv
			}
		case "WORKDIR":
			if in {
				img.WorkingDir = rest
			}
		case "ENV":
			if in {
				return img, fmt.Errorf("Dockerfile control-plane sets ENV %s: teach the boot test to pass it to the agent", rest)
			}
		}
	}
	if len(img.Entrypoint) == 0 {
		return img, errors.New("the Dockerfile has no control-plane stage with an ENTRYPOINT")
	}
	return img, sc.Err()
}

// boot is one values file's run.
type boot struct {
	t         *testing.T
	c         *testcluster.Cluster
	ns        string
	objs      []*unstructured.Unstructured
	values    map[string]any
	dir       string
	rendered  map[string]bool     // Secrets the chart renders
	services  map[string]string   // cluster addresses -> local stand-ins
	claimDirs map[string]string   // PVC name -> local dir behind its PersistentVolume
	supplied  map[string]string   // env var -> value the test gave a Secret it provided
	database  string              // URL of the Postgres database the agent must use (empty: SQLite)
	appName   string              // PGAPPNAME given through PG* variables, if any
	pgVars    bool                // the agent container reads PG* variables
	tls       *servingCertificate // for a TLS Secret the values expect to exist
}

func bootValuesFile(t *testing.T, c *testcluster.Cluster, img agentpod.Image, vf valuesFile) {
	ctx := context.Background()
	ns := c.NewNamespace(t, map[string]string{"pod-security.kubernetes.io/enforce": "restricted"})
	args := []string{"-f", vf.path}
	sets := map[string]string{}
	// The only deviation from the values: a session namespace of its own per run, so runs on
	// the shared cluster never collide and a namespace still terminating is never reused.
	if sn := sessionNamespaceFor(t, vf.path, ns); sn != "" {
		args = append(args, "--set", "sessionNamespace.name="+sn)
		sets["sessionNamespace.name"] = sn
	}
	b := &boot{
		t: t, c: c, ns: ns, objs: render(t, ns, args...), values: chartValues(t, vf.path, sets), dir: t.TempDir(),
		rendered: map[string]bool{}, services: map[string]string{}, claimDirs: map[string]string{}, supplied: map[string]string{},
	}
	for _, o := range b.objs {
		if o.GetKind() == "Secret" {
			b.rendered[o.GetName()] = true
		}
	}
	dep := b.agentDeployment()

	b.applyAll()
	b.provideSecrets(dep)
	b.providePersistentVolumes()
	b.playDatabaseStatefulSets()
	b.playModelGateway()
	b.waitForServiceAccountAccess(dep)
	pod := b.agentPod(dep)

	proc, err := agentpod.Prepare(ctx, agentpod.Options{
		Kube: c.AdminClient(), Config: c.RESTConfig(), Pod: pod, Container: "agent", Image: img,
		Dir: filepath.Join(b.dir, "agent"), Services: b.services,
		ClaimDir: func(claim string) string {
			if d, ok := b.claimDirs[claim]; ok {
				return d
			}
			return filepath.Join(b.dir, "claims", claim)
		},
	})
	if err != nil {
		t.Fatalf("prepare the agent as the kubelet would run pod %s: %v", pod.Name, err)
	}
	b.checkEnvComplete(dep, proc)
	for _, s := range proc.Substitutions {
		t.Logf("stand-in: %s", s)
	}

	readyURL := b.readinessURL(dep, proc)
	logPath := filepath.Join(b.dir, "agent.log")
	b.startAgent(proc, logPath, readyURL)

	httpsPort, err := proc.LocalPort(intstr.FromString("https"))
	if err != nil {
		t.Fatal(err)
	}
	api := b.apiClient(httpsPort)
	b.checkIdentityHeaders(proc, logPath)
	b.provideCABundle()
	b.provideModel(api)
	s, err := api.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "boot " + vf.name})
	if err != nil {
		t.Fatalf("create a session: %v%s", err, logTail(logPath))
	}
	b.checkSessionPod(s)
	b.checkDatabase(proc, s.ID)
}

// checkIdentityHeaders sends the configured email header to the agent's plain-HTTP port from
// the TCP source addresses the kernel reports inside a pod: 127.0.0.1, where port-forwarded
// connections arrive, is always refused; 127.0.0.6, where an Istio sidecar delivers every
// request from, is honoured when the rendered environment trusts it (istio.enabled) and no
// JWKS asks for a signed token as well.
func (b *boot) checkIdentityHeaders(proc *agentpod.Process, logPath string) {
	t := b.t
	env := proc.Env.Map()
	if env["AGENT_HEADER_AUTH_ENABLED"] != "true" {
		return
	}
	port, err := proc.LocalPort(intstr.FromString("http"))
	if err != nil {
		t.Fatal(err)
	}
	header := env["AGENT_HEADER_AUTH_EMAIL_HEADER"]
	const email = "boot-header-user@example.com"
	whoami := func(from string) (int, string) {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		}}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequest(http.MethodGet, "http://agent/api/v1/whoami", nil)
		req.Header.Set(header, email)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("whoami from %s: %v%s", from, err, logTail(logPath))
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// Refused either way: as not a trusted proxy, or because no proxy is trusted (inert).
	if code, body := whoami("127.0.0.1"); code != http.StatusUnauthorized || !strings.Contains(body, "identity headers ("+strings.ToLower(header)+")") {
		t.Errorf("identity header from loopback (a port-forward): %d %s, want 401", code, body)
	}
	istio, _ := lookup(b.values, "istio", "enabled").(bool)
	trusted := strings.Split(env["AGENT_TRUSTED_PROXY_CIDRS"], ",")
	if istio != slices.Contains(trusted, "127.0.0.6/32") {
		t.Errorf("istio.enabled=%v but the agent trusts %q: the Istio sidecar's 127.0.0.6/32 belongs there exactly with istio", istio, trusted)
	}
	if !istio || env["AGENT_JWKS_URL"] != "" {
		t.Logf("identity headers: refused from 127.0.0.1")
		return
	}
	code, body := whoami("127.0.0.6")
	var who apiv1.WhoAmI
	if code != http.StatusOK || json.Unmarshal([]byte(body), &who) != nil || who.User.Email != email || who.Authenticator != "header" {
		t.Errorf("identity header from the Istio sidecar's 127.0.0.6: %d %s, want 200 as %s by header", code, body, email)
		return
	}
	t.Logf("identity headers: refused from 127.0.0.1, honoured from the Istio sidecar's 127.0.0.6")
}

// agentDeployment is the rendered control-plane Deployment.
func (b *boot) agentDeployment() *appsv1.Deployment {
	for _, o := range b.objs {
		if o.GetKind() == "Deployment" && o.GetLabels()[apiv1.LabelComponent] == apiv1.AgentComponent {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				b.t.Fatalf("rendered Deployment: %v", err)
			}
			return &d
		}
	}
	b.t.Fatal("no control-plane Deployment rendered")
	return nil
}

// skipApply says which rendered objects this test does not create: helm test hooks (helm
// creates them only on `helm test`), and the cluster-wide ClusterRoles with fixed names
// (cake-agents-user, -admin, -attach) that one release per cluster owns — in the shared test
// cluster the end-to-end environment's release, whose helm install would refuse to adopt an
// object this test left behind (their content is checked by TestRenderedObjectsAccepted and
// the helm-unittest suites). Per-release cluster-scoped objects carry the release namespace
// in their names and are all applied, so the agent's own access is real.
func skipApply(o *unstructured.Unstructured, ns string) bool {
	if strings.Contains(o.GetAnnotations()["helm.sh/hook"], "test") {
		return true
	}
	return o.GetKind() == "ClusterRole" && !strings.Contains(o.GetName(), ns)
}

// applyAll creates the rendered objects for real (server-side apply), namespaces first, and
// deletes the cluster-scoped ones and those outside the release namespace when the test ends
// (the release namespace itself goes with NewNamespace's cleanup).
func (b *boot) applyAll() {
	t, c := b.t, b.c
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(c.AdminClient().Discovery()))
	ordered := append([]*unstructured.Unstructured{}, b.objs...)
	sort.SliceStable(ordered, func(i, j int) bool {
		return ordered[i].GetKind() == "Namespace" && ordered[j].GetKind() != "Namespace"
	})
	for _, o := range ordered {
		if skipApply(o, b.ns) {
			continue
		}
		apply(t, c, mapper, o, false)
		if o.GetNamespace() == b.ns {
			continue
		}
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			continue // apply reported it
		}
		name, ns := o.GetName(), o.GetNamespace()
		t.Cleanup(func() {
			ri := c.Dynamic().Resource(m.Resource)
			var err error
			if ns != "" {
				err = ri.Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
			} else {
				err = ri.Delete(context.Background(), name, metav1.DeleteOptions{})
			}
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("delete %s %s/%s: %v", gvk.Kind, ns, name, err)
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}
}

// provideSecrets creates the Secrets the values expect to exist already: every Secret the
// agent container reads (env or volume) that the chart does not render, each key filled
// according to what the agent reads from it; a Secret a rendered ExternalSecret targets is
// written the way the External Secrets operator would write it (owned by the ExternalSecret).
// A reference the test does not know how to fill fails the test, naming it.
func (b *boot) provideSecrets(dep *appsv1.Deployment) {
	t := b.t
	ctx := context.Background()
	c := containerNamed(t, &dep.Spec.Template.Spec, "agent")
	want := map[string]map[string][]byte{}
	need := func(secret, key string, value []byte) {
		if want[secret] == nil {
			want[secret] = map[string][]byte{}
		}
		want[secret][key] = value
	}
	for _, e := range c.Env {
		b.pgVars = b.pgVars || strings.HasPrefix(e.Name, "PG")
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || b.rendered[e.ValueFrom.SecretKeyRef.Name] {
			continue
		}
		if e.Name == "DATABASE_URL" && b.pgVars && e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional {
			// With PG* variables the URL key is optional: a platform team's Secret holds
			// only the PG* keys, and the agent must take Postgres from them alone.
			continue
		}
		need(e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key, []byte(b.valueFor(e.Name)))
	}
	// Secret volumes: their files are named by the env vars that point into them.
	for _, v := range dep.Spec.Template.Spec.Volumes {
		if v.Secret == nil || b.rendered[v.Secret.SecretName] {
			continue
		}
		var mountPath string
		for _, m := range c.VolumeMounts {
			if m.Name == v.Name {
				mountPath = m.MountPath
			}
		}
		found := false
		for _, e := range c.Env {
			if e.ValueFrom == nil && mountPath != "" && strings.HasPrefix(e.Value, strings.TrimSuffix(mountPath, "/")+"/") {
				need(v.Secret.SecretName, strings.TrimPrefix(e.Value, strings.TrimSuffix(mountPath, "/")+"/"), b.fileFor(e.Name))
				found = true
			}
		}
		if !found {
			t.Fatalf("the agent mounts Secret %s at %s, which the chart does not create, and no env var says which files it needs: teach the boot test what it holds", v.Secret.SecretName, mountPath)
		}
	}
	owners := b.externalSecretTargets()
	for _, name := range sortedKeys(want) {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: b.ns}, Data: want[name]}
		if owner, ok := owners[name]; ok {
			s.OwnerReferences = []metav1.OwnerReference{owner}
		}
		if _, err := b.c.AdminClient().CoreV1().Secrets(b.ns).Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create Secret %s: %v", name, err)
		}
		keys := sortedKeys(want[name])
		t.Logf("provided Secret %s (keys %s)", name, strings.Join(keys, ", "))
	}
}

// externalSecretTargets returns, for each rendered ExternalSecret, the owner reference the
// operator puts on the Secret it writes (creationPolicy Owner), keyed by that Secret's name.
func (b *boot) externalSecretTargets() map[string]metav1.OwnerReference {
	out := map[string]metav1.OwnerReference{}
	for _, o := range b.objs {
		if o.GetKind() != "ExternalSecret" {
			continue
		}
		target, _, _ := unstructured.NestedString(o.Object, "spec", "target", "name")
		if target == "" {
			target = o.GetName()
		}
		gv, _ := schema.ParseGroupVersion(o.GetAPIVersion())
		live, err := b.c.Dynamic().Resource(gv.WithResource("externalsecrets")).Namespace(b.ns).Get(context.Background(), o.GetName(), metav1.GetOptions{})
		if err != nil {
			b.t.Fatalf("ExternalSecret %s: %v", o.GetName(), err)
		}
		out[target] = metav1.OwnerReference{
			APIVersion: o.GetAPIVersion(), Kind: "ExternalSecret", Name: o.GetName(), UID: live.GetUID(),
			Controller: ptr(true), BlockOwnerDeletion: ptr(true),
		}
	}
	return out
}

// valueFor is what an operator puts in an existing Secret for the env var that reads it.
func (b *boot) valueFor(env string) string {
	if v, ok := b.supplied[env]; ok {
		return v
	}
	v := func() string {
		switch env {
		case "DATABASE_URL":
			return b.externalDatabase()
		case "PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD":
			u, err := url.Parse(b.externalDatabase())
			if err != nil {
				b.t.Fatal(err)
			}
			pw, _ := u.User.Password()
			return map[string]string{"PGHOST": u.Hostname(), "PGPORT": u.Port(), "PGDATABASE": strings.TrimPrefix(u.Path, "/"),
				"PGUSER": u.User.Username(), "PGPASSWORD": pw}[env]
		case "PGSSLMODE":
			return "disable" // the test server speaks no TLS
		case "PGSSLROOTCERT":
			// A path in the agent's own file system: the control-plane image installs
			// ca-certificates, and so has this machine (pgx reads the file in every sslmode).
			return "/etc/ssl/certs/ca-certificates.crt"
		case "PGAPPNAME":
			b.appName = "cake-agents-boot-" + randomHex(4)
			return b.appName
		case "PGCONNECT_TIMEOUT":
			return "10"
		case "PGOPTIONS":
			return "-c statement_timeout=60000"
		case "AGENT_AUTH_SECRET":
			return randomHex(24)
		case "LITELLM_API_KEY", "LINEAR_API_KEY", "LINEAR_WEBHOOK_SECRET", "SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET":
			return "test-" + strings.ToLower(env)
		}
		b.t.Fatalf("the agent reads %s from a Secret the chart does not create: teach the boot test (valueFor) what such a Secret holds", env)
		return ""
	}()
	b.supplied[env] = v
	return v
}

// fileFor is the content of a file in a Secret volume the env var env points at.
func (b *boot) fileFor(env string) []byte {
	if b.tls == nil {
		b.tls = newServingCertificate(b.t, b.ns)
	}
	switch env {
	case "AGENT_TLS_CERT_FILE":
		return b.tls.chainPEM
	case "AGENT_TLS_KEY_FILE":
		return b.tls.keyPEM
	case "AGENT_GITHUB_APP_PRIVATE_KEY_FILE":
		// The agent reads and parses the App's key at start.
		key, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			b.t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	}
	b.t.Fatalf("the agent reads the file in %s from a Secret the chart does not create: teach the boot test (fileFor) what it holds", env)
	return nil
}

// externalDatabase is a fresh database on the test Postgres ($CAKE_TEST_POSTGRES_URL, or a
// throwaway server), standing in for the production database an existing Secret names.
func (b *boot) externalDatabase() string {
	if b.database == "" {
		b.database = testpg.Start(b.t)
	}
	return b.database
}

// providePersistentVolumes binds each rendered PersistentVolumeClaim to a PersistentVolume
// the test makes (the cluster has no provisioner), whose hostPath is the local directory the
// agent process gets for the claim: the scheduler places the pod, and the data the agent
// writes lands where the volume says.
func (b *boot) providePersistentVolumes() {
	t := b.t
	for _, o := range b.objs {
		if o.GetKind() != "PersistentVolumeClaim" {
			continue
		}
		dir := filepath.Join(b.dir, "claims", o.GetName())
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		b.claimDirs[o.GetName()] = dir
		size, _, _ := unstructured.NestedString(o.Object, "spec", "resources", "requests", "storage")
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: b.ns + "-" + o.GetName()},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: b.ns, Name: o.GetName()},
			},
		}
		if sc, ok, _ := unstructured.NestedString(o.Object, "spec", "storageClassName"); ok {
			pv.Spec.StorageClassName = sc
		}
		if _, err := b.c.AdminClient().CoreV1().PersistentVolumes().Create(context.Background(), pv, metav1.CreateOptions{}); err != nil {
			t.Fatalf("PersistentVolume for claim %s: %v", o.GetName(), err)
		}
		t.Cleanup(func() {
			_ = b.c.AdminClient().CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		})
	}
}

// playDatabaseStatefulSets stands in for the chart's development Postgres (kwok runs no
// container): a throwaway PostgreSQL server set up the way the official image's entrypoint
// sets up its data dir from the StatefulSet's environment (POSTGRES_USER, POSTGRES_PASSWORD,
// POSTGRES_DB, resolved from the rendered Secret like the kubelet would), with password
// authentication on, reached under the rendered Service's cluster addresses.
func (b *boot) playDatabaseStatefulSets() {
	t := b.t
	ctx := context.Background()
	for _, o := range b.objs {
		if o.GetKind() != "StatefulSet" {
			continue
		}
		var sts appsv1.StatefulSet
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &sts); err != nil {
			t.Fatal(err)
		}
		c := containerNamed(t, &sts.Spec.Template.Spec, "postgres")
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: sts.Name + "-0", Namespace: b.ns, Labels: sts.Spec.Template.Labels}, Spec: sts.Spec.Template.Spec}
		env, err := agentpod.ResolveEnv(ctx, b.c.AdminClient(), pod, c)
		if err != nil {
			t.Fatalf("StatefulSet %s: %v", sts.Name, err)
		}
		e := env.Map()
		user, password, db := e["POSTGRES_USER"], e["POSTGRES_PASSWORD"], e["POSTGRES_DB"]
		if user == "" || password == "" || db == "" {
			t.Fatalf("StatefulSet %s does not set POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB: %v", sts.Name, sortedKeys(e))
		}
		server, err := testpg.StartServer(ctx, testpg.Options{})
		if errors.Is(err, testpg.ErrNoBinaries) {
			t.Fatalf("the in-chart Postgres needs the PostgreSQL server binaries here: apt-get install postgresql: %v", err)
		}
		if err != nil {
			t.Fatalf("start a server for StatefulSet %s: %v", sts.Name, err)
		}
		t.Cleanup(func() { _ = server.Stop() })
		if err := initLikeOfficialImage(ctx, server, user, password, db); err != nil {
			t.Fatalf("StatefulSet %s: %v", sts.Name, err)
		}
		su, _ := url.Parse(server.URL)
		local := su.Host
		for _, o := range b.objs {
			if o.GetKind() != "Service" {
				continue
			}
			var svc corev1.Service
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &svc); err != nil {
				t.Fatal(err)
			}
			if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
				continue
			}
			for _, p := range svc.Spec.Ports {
				for _, addr := range agentpod.ServiceAddresses(svc.Name, b.ns, b.ns, p.Port) {
					b.services[addr] = local
				}
			}
		}
		if len(b.services) == 0 {
			t.Fatalf("no rendered Service selects the pods of StatefulSet %s", sts.Name)
		}
		u := &url.URL{Scheme: "postgres", User: url.UserPassword(user, password), Host: local, Path: "/" + db, RawQuery: "sslmode=disable"}
		b.database = u.String()
		t.Logf("StatefulSet %s played by a PostgreSQL server at %s (database %s, user %s)", sts.Name, local, db, user)
	}
}

// playModelGateway plays the LiteLLM proxy litellm.baseURL names as a cluster Service
// (the agent makes each session a key there with its master key, so a create fails
// without it) with a fake LiteLLM accepting the master key the agent is given.
func (b *boot) playModelGateway() {
	t := b.t
	base, _ := lookup(b.values, "litellm", "baseURL").(string)
	if base == "" {
		return
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("litellm.baseURL %q: %v", base, err)
	}
	if !strings.HasSuffix(u.Hostname(), ".svc") && !strings.HasSuffix(u.Hostname(), ".svc.cluster.local") {
		t.Fatalf("litellm.baseURL %q names no cluster Service: teach the boot test (playModelGateway) to play it", base)
	}
	master, ok := b.supplied["LITELLM_API_KEY"]
	if !ok {
		master, _ = lookup(b.values, "litellm", "secret", "apiKey").(string)
	}
	srv := httptest.NewServer(fakelitellm.New(master))
	t.Cleanup(srv.Close)
	b.services[u.Host] = strings.TrimPrefix(srv.URL, "http://")
	t.Logf("LiteLLM at %s played by a fake LiteLLM at %s", u.Host, srv.URL)
}

// initLikeOfficialImage creates the role and database the image's entrypoint creates, and
// turns password authentication on for every role but the superuser, so a wrong password in
// the Secret fails as it would against the real image.
func initLikeOfficialImage(ctx context.Context, s *testpg.Server, user, password, db string) error {
	hba := "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
	if err := os.WriteFile(filepath.Join(s.Dir, "data", "pg_hba.conf"), []byte(hba), 0o600); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, s.URL)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	for _, q := range []string{
		"SELECT pg_reload_conf()",
		fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", pgx.Identifier{user}.Sanitize(), strings.ReplaceAll(password, "'", "''")),
		fmt.Sprintf("CREATE DATABASE %s OWNER %s", pgx.Identifier{db}.Sanitize(), pgx.Identifier{user}.Sanitize()),
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", strings.SplitN(q, " PASSWORD", 2)[0], err)
		}
	}
	return nil
}

// waitForServiceAccountAccess waits until the API server's authorizer grants the agent's
// ServiceAccount every rule its rendered bindings give it: a binding just created is not
// visible to the authorizer at once, and an agent started before it would fail for reasons
// no real install has.
func (b *boot) waitForServiceAccountAccess(dep *appsv1.Deployment) {
	t := b.t
	ctx := context.Background()
	kube := b.c.AdminClient()
	sa := dep.Spec.Template.Spec.ServiceAccountName
	user := "system:serviceaccount:" + b.ns + ":" + sa
	var checks []authorizationv1.ResourceAttributes
	for _, o := range b.objs {
		if skipApply(o, b.ns) || (o.GetKind() != "RoleBinding" && o.GetKind() != "ClusterRoleBinding") {
			continue
		}
		var rb rbacv1.RoleBinding // a ClusterRoleBinding has the same fields that matter here
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &rb); err != nil {
			t.Fatal(err)
		}
		bound := false
		for _, s := range rb.Subjects {
			bound = bound || (s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == b.ns)
		}
		if !bound {
			continue
		}
		var rules []rbacv1.PolicyRule
		if rb.RoleRef.Kind == "ClusterRole" {
			r, err := kube.RbacV1().ClusterRoles().Get(ctx, rb.RoleRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("%s %s binds ClusterRole %s: %v", o.GetKind(), o.GetName(), rb.RoleRef.Name, err)
			}
			rules = r.Rules
		} else {
			r, err := kube.RbacV1().Roles(o.GetNamespace()).Get(ctx, rb.RoleRef.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatalf("RoleBinding %s binds Role %s: %v", o.GetName(), rb.RoleRef.Name, err)
			}
			rules = r.Rules
		}
		for _, r := range rules {
			if len(r.Verbs) == 0 || len(r.Resources) == 0 {
				continue
			}
			a := authorizationv1.ResourceAttributes{Namespace: o.GetNamespace(), Verb: r.Verbs[0], Resource: r.Resources[0]}
			if len(r.APIGroups) > 0 {
				a.Group = r.APIGroups[0]
			}
			if len(r.ResourceNames) > 0 {
				a.Name = r.ResourceNames[0]
			}
			if res, sub, ok := strings.Cut(a.Resource, "/"); ok {
				a.Resource, a.Subresource = res, sub
			}
			checks = append(checks, a)
		}
	}
	if len(checks) == 0 {
		t.Fatalf("no rendered binding gives ServiceAccount %s any access", sa)
	}
	var denied []string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		denied = denied[:0]
		for _, a := range checks {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + b.ns, "system:authenticated"},
				ResourceAttributes: &a,
			}}
			res, err := kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				return false, err
			}
			if !res.Status.Allowed {
				denied = append(denied, fmt.Sprintf("%s %s/%s in %q", a.Verb, a.Group, a.Resource, a.Namespace))
			}
		}
		return len(denied) == 0, nil
	})
	if err != nil {
		t.Fatalf("the authorizer never granted %s what its bindings give it (still denied: %s): %v", user, strings.Join(denied, "; "), err)
	}
}

// agentPod waits until the Deployment's first pod is scheduled (kwok plays its kubelet) and
// returns it: the pod whose identity and environment the local agent takes.
func (b *boot) agentPod(dep *appsv1.Deployment) *corev1.Pod {
	t := b.t
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sel := labels.SelectorFromSet(dep.Spec.Selector.MatchLabels).String()
	pods := b.c.AdminClient().CoreV1().Pods(b.ns)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.LabelSelector = sel
			return pods.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.LabelSelector = sel
			return pods.Watch(ctx, o)
		},
	}
	ev, err := watchtools.UntilWithSync(ctx, lw, &corev1.Pod{}, nil, func(ev watch.Event) (bool, error) {
		p, ok := ev.Object.(*corev1.Pod)
		return ok && ev.Type != watch.Deleted && p.DeletionTimestamp == nil && p.Spec.NodeName != "", nil
	})
	if err != nil {
		t.Fatalf("no pod of Deployment %s was scheduled (selector %s): %v", dep.Name, sel, err)
	}
	return ev.Object.(*corev1.Pod)
}

// checkEnvComplete fails the test unless every variable the chart renders into the agent
// container reached the process: a variable the resolver skipped (an optional Secret the test
// did not provide) would make this test prove less than it claims.
func (b *boot) checkEnvComplete(dep *appsv1.Deployment, proc *agentpod.Process) {
	c := containerNamed(b.t, &dep.Spec.Template.Spec, "agent")
	got := proc.Env.Map()
	for _, e := range c.Env {
		if e.Name == "DATABASE_URL" && b.pgVars && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil &&
			e.ValueFrom.SecretKeyRef.Optional != nil && *e.ValueFrom.SecretKeyRef.Optional {
			continue // left out on purpose: the Secret holds only PG* keys (provideSecrets)
		}
		if _, ok := got[e.Name]; !ok {
			b.t.Errorf("the chart sets %s but the agent did not get it (skipped: %v)", e.Name, proc.Env.Skipped)
		}
	}
	if len(c.EnvFrom) > 0 {
		b.t.Errorf("the agent container has envFrom %v: check the boot test provides its sources", c.EnvFrom)
	}
	if b.t.Failed() {
		b.t.FailNow()
	}
}

// readinessURL is the rendered readiness probe, pointed at the local stand-in of its port.
func (b *boot) readinessURL(dep *appsv1.Deployment, proc *agentpod.Process) string {
	c := containerNamed(b.t, &dep.Spec.Template.Spec, "agent")
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil {
		b.t.Fatal("the agent container has no httpGet readiness probe")
	}
	g := c.ReadinessProbe.HTTPGet
	if g.Path != "/readyz" {
		b.t.Errorf("the readiness probe asks %s, want /readyz", g.Path)
	}
	port, err := proc.LocalPort(g.Port)
	if err != nil {
		b.t.Fatalf("readiness probe: %v", err)
	}
	return fmt.Sprintf("http://127.0.0.1:%d%s", port, g.Path)
}

// startAgent starts the agent and waits until its readiness probe answers 200, as the
// kubelet's probe would; an exit or a timeout fails the test with the agent's log.
func (b *boot) startAgent(proc *agentpod.Process, logPath, readyURL string) {
	t := b.t
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := proc.Command()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := ownedproc.Start(cmd); err != nil {
		logFile.Close()
		t.Fatalf("start the agent: %v", err)
	}
	done := make(chan struct{})
	var waitErr error
	logShown := false
	go func() { waitErr = cmd.Wait(); logFile.Close(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() && !logShown {
			t.Logf("agent log:%s", logTail(logPath))
		}
	})
	began := time.Now()
	var last string
	for {
		resp, err := probe(readyURL)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode == http.StatusOK {
				t.Logf("agent ready in %s", time.Since(began).Round(10*time.Millisecond))
				return
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-done:
			logShown = true
			t.Fatalf("the agent exited before it was ready (%v)%s", waitErr, logTail(logPath))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Since(began) > 90*time.Second {
			logShown = true
			t.Fatalf("the agent was not ready after 90s (last probe: %s)%s", last, logTail(logPath))
		}
	}
}

// probe is one readiness probe: a GET with the kubelet's default timeout of one second.
func probe(u string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 512))
	_ = resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, err
}

// apiClient talks to the agent's HTTPS port the way `kubectl agents` does after its
// port-forward: the plugin's own transport, verifying the agent with the CA it published in
// its ConfigMap, presenting a cluster-admin client certificate.
func (b *boot) apiClient(httpsPort int) *client.Client {
	t := b.t
	ctx := context.Background()
	pool, err := tunnel.ServingCA(ctx, b.c.AdminClient(), b.ns)
	if err != nil {
		t.Fatalf("the agent's serving CA: %v", err)
	}
	cfg := b.c.UserConfig(t, "boot-admin", "system:masters")
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", httpsPort))
	}
	hc, err := tunnel.HTTPClient(cfg, pool, dial)
	if err != nil {
		t.Fatal(err)
	}
	api, err := client.New(tunnel.AgentURL(b.ns), hc)
	if err != nil {
		t.Fatal(err)
	}
	return api
}

// provideModel makes sure sessions have a model, as the admin following the install guide
// would: values that give none (no providers, no litellm.baseURL) must have the agent refuse a
// session with the message telling an admin what to do; the admin then sets a provider through
// the API and sessions are accepted.
func (b *boot) provideModel(api *client.Client) {
	t := b.t
	ctx := context.Background()
	p, _ := lookup(b.values, "providers").(map[string]any)
	for k, v := range p {
		if k == "existingSecretKey" || k == "existingSecret" && v == "" {
			continue
		}
		return // providers seeded from values or a Secret
	}
	if u, _ := lookup(b.values, "litellm", "baseURL").(string); u != "" {
		return
	}
	_, err := api.CreateSession(ctx, apiv1.CreateSessionRequest{Title: "boot without a model"})
	if err == nil || !strings.Contains(err.Error(), "providers set") {
		t.Fatalf("create a session with no model configured: got %v, want the refusal naming `kubectl agents providers set`", err)
	}
	providers := json.RawMessage(`{"boot":{"npm":"@ai-sdk/openai-compatible","name":"Boot",` +
		`"options":{"baseURL":"http://models.boot.invalid/v1","apiKey":"sk-boot-canary"},` +
		`"models":{"m":{"name":"m","limit":{"context":128000,"output":4096}}}}}`)
	if _, err := api.PutProviders(ctx, providers); err != nil {
		t.Fatalf("an admin sets a provider: %v", err)
	}
}

// checkSessionPod requires the session's pod in the namespace the values choose, with the
// session images the values name.
func (b *boot) checkSessionPod(s *apiv1.Session) {
	t := b.t
	wantNS := b.ns
	if n, _ := lookup(b.values, "sessionNamespace", "name").(string); n != "" {
		wantNS = n
	}
	if s.PodName == "" {
		t.Fatalf("session %s has no pod name (state %s: %s)", s.ID, s.State, s.Message)
	}
	if s.PodNamespace != wantNS {
		t.Errorf("session %s reports its pod in namespace %q, want %q", s.ID, s.PodNamespace, wantNS)
	}
	pod := b.c.WaitForPod(t, wantNS, s.PodName, func(*corev1.Pod) bool { return true })
	want := map[string]string{
		"data-plane-init": chartImage(t, b.values, "dataPlaneInit"),
		"opencode":        chartImage(t, b.values, "dataPlane"),
	}
	got := map[string]string{}
	for _, c := range pod.Spec.InitContainers {
		got[c.Name] = c.Image
	}
	for _, c := range pod.Spec.Containers {
		got[c.Name] = c.Image
	}
	for name, img := range want {
		if got[name] != img {
			t.Errorf("session pod %s/%s: container %s runs %q, want %q (from the values)", wantNS, pod.Name, name, got[name], img)
		}
	}
	t.Logf("session %s: pod %s/%s (%s, %s)", s.ID, wantNS, pod.Name, got["data-plane-init"], got["opencode"])
}

// provideCABundle creates the sessions' CA bundle ConfigMap the values name, in the session
// namespace, as a platform team (or trust-manager) would before the first session.
func (b *boot) provideCABundle() {
	name, _ := lookup(b.values, "sessions", "caBundle", "configMapName").(string)
	if name == "" {
		return
	}
	key, _ := lookup(b.values, "sessions", "caBundle", "key").(string)
	ns := b.ns
	if n, _ := lookup(b.values, "sessionNamespace", "name").(string); n != "" {
		ns = n
	}
	cert := newServingCertificate(b.t, ns)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{key: string(cert.chainPEM)}}
	if _, err := b.c.AdminClient().CoreV1().ConfigMaps(ns).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		b.t.Fatalf("create the CA bundle ConfigMap %s/%s: %v", ns, name, err)
	}
}

// checkDatabase requires the session in the database the values point the agent at: the
// Postgres database the test provided (through the Secret's URL, the PG* variables, or the
// in-chart Postgres), or SQLite in the volume behind /data.
func (b *boot) checkDatabase(proc *agentpod.Process, id string) {
	t := b.t
	ctx := context.Background()
	dbURL := proc.Env.Map()["DATABASE_URL"]
	if strings.HasPrefix(dbURL, "sqlite://") {
		if b.database != "" {
			t.Errorf("the agent uses SQLite (%s) although the test provided a Postgres database", dbURL)
		}
		local, ok := proc.Mounts.Local(strings.TrimPrefix(dbURL, "sqlite://"))
		if !ok {
			t.Fatalf("the SQLite database %s is on no volume: it would be lost with the pod", dbURL)
		}
		if st, err := os.Stat(local); err != nil || st.Size() == 0 {
			t.Errorf("the SQLite database %s (locally %s) was not written: %v", dbURL, local, err)
		}
		return
	}
	if b.database == "" {
		t.Fatalf("the agent uses Postgres (DATABASE_URL %q) but the test provided no database", strings.SplitN(dbURL, "@", 2)[0])
	}
	conn, err := pgx.Connect(ctx, b.database)
	if err != nil {
		t.Fatalf("connect to the agent's database: %v", err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM sessions WHERE id = $1", id).Scan(&n); err != nil || n != 1 {
		t.Errorf("session %s in the Postgres database the values name: %d rows (%v)", id, n, err)
	}
	if b.appName != "" {
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()", b.appName).Scan(&n); err != nil || n == 0 {
			t.Errorf("no connection of the agent carries PGAPPNAME %q: the PG* variables were not used (%v)", b.appName, err)
		}
	}
}

// chartValues merges the chart's values.yaml, the values file and --set overrides (dotted
// keys, string values), as helm does for these simple cases.
func chartValues(t *testing.T, valuesPath string, sets map[string]string) map[string]any {
	t.Helper()
	read := func(p string) map[string]any {
		raw, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]any{}
		if err := yaml.Unmarshal(raw, &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return m
	}
	vals := mergeValues(read(filepath.Join(chartDir(t), "values.yaml")), read(valuesPath))
	for k, v := range sets {
		parts := strings.Split(k, ".")
		m := vals
		for _, p := range parts[:len(parts)-1] {
			next, ok := m[p].(map[string]any)
			if !ok {
				next = map[string]any{}
				m[p] = next
			}
			m = next
		}
		m[parts[len(parts)-1]] = v
	}
	return vals
}

func mergeValues(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bm, ok1 := out[k].(map[string]any)
		om, ok2 := v.(map[string]any)
		if ok1 && ok2 {
			out[k] = mergeValues(bm, om)
		} else {
			out[k] = v
		}
	}
	return out
}

func lookup(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

// chartImage is the image reference the values give component (dataPlane, dataPlaneInit),
// spelled out independently of the chart's helper: registry.default before a repository
// that names no registry, the tag or else the chart's appVersion.
func chartImage(t *testing.T, vals map[string]any, component string) string {
	t.Helper()
	repo, _ := lookup(vals, component, "image", "repository").(string)
	if repo == "" {
		t.Fatalf("values have no %s.image.repository", component)
	}
	if d, _ := lookup(vals, component, "image", "digest").(string); d != "" {
		t.Fatalf("%s.image.digest is set: teach chartImage about digests", component)
	}
	first, _, hasSlash := strings.Cut(repo, "/")
	namesRegistry := hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost")
	if reg, _ := lookup(vals, "registry", "default").(string); reg != "" && !namesRegistry {
		repo = strings.TrimSuffix(reg, "/") + "/" + repo
	}
	tag := fmt.Sprint(lookup(vals, component, "image", "tag"))
	if tag == "" || tag == "<nil>" {
		raw, err := os.ReadFile(filepath.Join(chartDir(t), "Chart.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var chart struct {
			AppVersion string `json:"appVersion"`
		}
		if err := yaml.Unmarshal(raw, &chart); err != nil {
			t.Fatal(err)
		}
		tag = chart.AppVersion
	}
	return repo + ":" + tag
}

// servingCertificate is a TLS Secret's content as a platform team would provide it: a
// certificate for the agent's Service names issued by their own CA, chain in tls.crt.
type servingCertificate struct {
	chainPEM, keyPEM []byte
}

func newServingCertificate(t *testing.T, ns string) *servingCertificate {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "boot-test platform CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	svc := releaseName + "." + ns + ".svc"
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: svc},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{svc, svc + ".cluster.local"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})...)
	return &servingCertificate{chainPEM: chain, keyPEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})}
}

func containerNamed(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q rendered", name)
	return nil
}

// logTail returns the last lines of the agent's log, for failure messages.
func logTail(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("\n(no agent log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	return "\n--- agent log (last " + fmt.Sprint(len(lines)) + " lines) ---\n" + strings.Join(lines, "\n")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func ptr[T any](v T) *T { return &v }

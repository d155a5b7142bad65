package realnode

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// restrictedContainer is the security context the restricted Pod Security Standard asks for.
func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func restrictedPod(uid int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(uid),
		RunAsGroup:     ptr.To(uid),
		FSGroup:        ptr.To(uid),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// deployment creates a one-replica Deployment and a Service on port for it, and waits until it
// is available. It returns the Service's in-cluster DNS name.
func deployment(t *testing.T, ns, name string, port int32, uid int64, c corev1.Container, volumes ...corev1.Volume) string {
	t.Helper()
	ctx := context.Background()
	kube := cluster.AdminClient()
	labels := map[string]string{"app": name}
	c.Name = name
	c.ImagePullPolicy = corev1.PullNever
	c.SecurityContext = restrictedContainer()
	c.Ports = []corev1.ContainerPort{{Name: "main", ContainerPort: port}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(int32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					AutomountServiceAccountToken: ptr.To(false),
					EnableServiceLinks:           ptr.To(false),
					SecurityContext:              restrictedPod(uid),
					Containers:                   []corev1.Container{c},
					Volumes:                      volumes,
				},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "main", Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitAvailable(t, ns, name, 3*time.Minute)
	return fmt.Sprintf("%s.%s.svc.cluster.local", name, ns)
}

// waitAvailable waits for a Deployment's every replica to be available (its pods Ready by their
// probes), failing with the pods' state and logs.
func waitAvailable(t *testing.T, ns, name string, timeout time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	kube := cluster.AdminClient()
	for {
		dep, err := kube.AppsV1().Deployments(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err == nil && dep.Spec.Replicas != nil && dep.Status.ObservedGeneration >= dep.Generation &&
			dep.Status.AvailableReplicas == *dep.Spec.Replicas && dep.Status.UpdatedReplicas == *dep.Spec.Replicas {
			return time.Since(began)
		}
		if time.Since(began) > timeout {
			sel := ""
			if dep != nil && dep.Spec.Selector != nil {
				sel = metav1.FormatLabelSelector(dep.Spec.Selector)
			}
			t.Fatalf("deployment %s/%s not available after %s: %v\n%s", ns, name, timeout, err, podLogs(ns, sel))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// postgres runs the Postgres image as a plain Deployment (a database "outside" the chart, as
// the install guide's externalDatabase expects) and returns its URL for pods.
const (
	pgUser     = "cake"
	pgPassword = "cake-db-password"
	pgDatabase = "cake_agents"
)

func postgres(t *testing.T, ns, name string) (url string) {
	t.Helper()
	user, password, db := pgUser, pgPassword, pgDatabase
	empty := corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
	host := deployment(t, ns, name, 5432, 999, corev1.Container{
		Image: images.name(imgPostgres),
		Env: []corev1.EnvVar{
			{Name: "POSTGRES_USER", Value: user},
			{Name: "POSTGRES_PASSWORD", Value: password},
			{Name: "POSTGRES_DB", Value: db},
			{Name: "PGDATA", Value: "/var/lib/postgresql/data/pgdata"},
		},
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:  corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"pg_isready", "-U", user, "-d", db, "-h", "127.0.0.1"}}},
			PeriodSeconds: 1,
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: "data", MountPath: "/var/lib/postgresql/data"},
			{Name: "run", MountPath: "/var/run/postgresql"},
			{Name: "tmp", MountPath: "/tmp"},
		},
	}, corev1.Volume{Name: "data", VolumeSource: empty}, corev1.Volume{Name: "run", VolumeSource: empty}, corev1.Volume{Name: "tmp", VolumeSource: empty})
	return fmt.Sprintf("postgres://%s:%s@%s:5432/%s?sslmode=disable", user, password, host, db)
}

// psql runs a query in the Postgres pod behind a Deployment or StatefulSet (kubectl exec through
// the kubelet) and returns its unaligned output.
func psql(t *testing.T, ns, target, user, password, db, query string) string {
	t.Helper()
	out := run(t, env(t), time.Minute, tool(t, "kubectl"), "exec", "-n", ns, target, "--",
		"env", "PGPASSWORD="+password, "psql", "-h", "127.0.0.1", "-U", user, "-d", db, "-At", "-c", query)
	return strings.TrimSpace(out)
}

func intOrPort(p int32) intstr.IntOrString { return intstr.FromInt32(p) }

package realnode

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/cakeai/cake-agents/test/nodeenv"
)

// deployment creates a one-replica restricted Deployment and a Service on port for it, waits
// until it is available, and returns the Service's in-cluster DNS name.
func deployment(t *testing.T, ns, name string, port int32, uid int64, c corev1.Container, volumes ...corev1.Volume) string {
	t.Helper()
	host, err := nodeenv.Deployment(context.Background(), cluster.AdminClient(), ns, name, port, uid, c, volumes...)
	if err != nil {
		t.Fatal(err)
	}
	return host
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
		Image: images.Name(nodeenv.ImgPostgres),
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

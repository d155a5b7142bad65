package nodeenv

import (
	"context"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// RestrictedContainer is the security context the restricted Pod Security Standard asks for.
func RestrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr.To(false),
		ReadOnlyRootFilesystem:   ptr.To(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// RestrictedPod is the pod security context of the restricted standard, running as uid.
func RestrictedPod(uid int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr.To(true),
		RunAsUser:      ptr.To(uid),
		RunAsGroup:     ptr.To(uid),
		FSGroup:        ptr.To(uid),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

// Deployment creates a one-replica Deployment of container c (restricted, from an imported
// image) and a Service on port for it, and waits until it is available. It returns the
// Service's in-cluster DNS name.
func Deployment(ctx context.Context, kube kubernetes.Interface, ns, name string, port int32, uid int64, c corev1.Container, volumes ...corev1.Volume) (string, error) {
	labels := map[string]string{"app": name}
	c.Name = name
	c.ImagePullPolicy = corev1.PullNever
	c.SecurityContext = RestrictedContainer()
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
					SecurityContext:              RestrictedPod(uid),
					Containers:                   []corev1.Container{c},
					Volumes:                      volumes,
				},
			},
		},
	}
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("deployment %s/%s: %w", ns, name, err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "main", Port: port, TargetPort: intstr.FromInt32(port)}},
		},
	}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return "", fmt.Errorf("service %s/%s: %w", ns, name, err)
	}
	if _, err := WaitAvailable(ctx, kube, ns, name, 3*time.Minute); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s.%s.svc.cluster.local", name, ns), nil
}

// WaitAvailable waits for a Deployment's every replica to be available (its pods Ready by their
// probes) and returns how long that took; its error carries the pods' state and logs.
func WaitAvailable(ctx context.Context, kube kubernetes.Interface, ns, name string, timeout time.Duration) (time.Duration, error) {
	began := time.Now()
	for {
		dep, err := kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil && dep.Spec.Replicas != nil && dep.Status.ObservedGeneration >= dep.Generation &&
			dep.Status.AvailableReplicas == *dep.Spec.Replicas && dep.Status.UpdatedReplicas == *dep.Spec.Replicas {
			return time.Since(began), nil
		}
		if time.Since(began) > timeout || ctx.Err() != nil {
			sel := ""
			if dep != nil && dep.Spec.Selector != nil {
				sel = metav1.FormatLabelSelector(dep.Spec.Selector)
			}
			return 0, fmt.Errorf("deployment %s/%s not available after %s: %v\n%s", ns, name, time.Since(began).Round(time.Second), err, PodLogs(kube, ns, sel))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// PodLogs returns the state and last log lines of every container of the pods matching
// selector in ns, and the namespace's warning events, for failure messages.
func PodLogs(kube kubernetes.Interface, ns, selector string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s: phase %s\n", p.Name, p.Status.Phase)
		for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "  container %s: ready=%v restarts=%d state=%+v last=%+v\n", cs.Name, cs.Ready, cs.RestartCount, cs.State, cs.LastTerminationState)
		}
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			tail := int64(40)
			data, err := kube.CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: c.Name, TailLines: &tail}).DoRaw(ctx)
			if err != nil {
				fmt.Fprintf(&b, "  logs of %s: %v\n", c.Name, err)
				continue
			}
			fmt.Fprintf(&b, "  --- logs of %s ---\n%s\n", c.Name, data)
		}
	}
	events, err := kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err == nil {
		for _, e := range events.Items {
			if e.Type != corev1.EventTypeNormal {
				fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
			}
		}
	}
	return b.String()
}

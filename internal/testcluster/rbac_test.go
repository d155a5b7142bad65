package testcluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/cakeai/cake-agents/internal/testcluster"
)

// Grant returns only when the new binding is enforced: the user's very next request, with
// no retry, is allowed. (A RoleBinding used at once was once refused, "forbidden: you may
// not list pods", because the authorizer had not seen it yet.)
func TestGrantIsEnforcedWhenItReturns(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	for _, subject := range []rbacv1.Subject{
		{Kind: rbacv1.UserKind, Name: "grant-user-" + ns},
		{Kind: rbacv1.GroupKind, Name: "grant-group-" + ns},
	} {
		user, groups := subject.Name, []string(nil)
		if subject.Kind == rbacv1.GroupKind {
			user, groups = "member-"+ns, []string{subject.Name}
		}
		client, err := kubernetes.NewForConfig(c.UserConfig(t, user, groups...))
		if err != nil {
			t.Fatal(err)
		}
		c.Grant(t, ns, "lister-"+subject.Name, subject,
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"pods", "pods/log"}, Verbs: []string{"list", "get"}})
		if _, err := client.CoreV1().Pods(ns).List(ctxFor(t), metav1.ListOptions{}); err != nil {
			t.Errorf("%s %s: list pods right after Grant: %v", subject.Kind, subject.Name, err)
		}
	}
}

// WaitForAccess gives up (with the question it asked) when access never comes, and
// WaitForBindings finds bindings by label and checks each subject's role.
func TestWaitForAccessAndBindings(t *testing.T) {
	c := testcluster.Get(t)
	ns := c.NewNamespace(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	err := testcluster.WaitForAccess(ctx, c.AdminClient(), ns, rbacv1.Subject{Kind: rbacv1.UserKind, Name: "nobody-" + ns},
		[]rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get"}}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("access never granted: err = %v, want a deadline error", err)
	}

	admin := c.AdminClient()
	bg := context.Background()
	labels := map[string]string{"testcluster-test": ns}
	if _, err := admin.RbacV1().Roles(ns).Create(bg, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "reader"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get"}}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RbacV1().RoleBindings(ns).Create(bg, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "reader", Labels: labels},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "reader"},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "robot"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	if err := testcluster.WaitForBindings(ctx, admin, "testcluster-test="+ns, nil); err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(c.ServiceAccountConfig(t, ns, "robot"))
	if err != nil {
		t.Fatal(err)
	}
	// NotFound is an answer too: only Forbidden means the binding was not in force.
	if _, err := client.CoreV1().ConfigMaps(ns).Get(ctxFor(t), "anything", metav1.GetOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("ServiceAccount reads a ConfigMap right after WaitForBindings: %v", err)
	}
}

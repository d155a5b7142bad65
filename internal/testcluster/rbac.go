package testcluster

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Grant creates a Role in ns (a ClusterRole when ns is "") named name with rules, binds it to
// subject with a binding of the same name, and returns only once the API server's authorizer
// allows subject every verb on every resource of rules (WaitForAccess). Both objects are
// removed when the test ends.
//
// Use it (or WaitForAccess after creating bindings some other way) for every binding a test
// relies on: RBAC reaches the authorizer through the API server's informers a moment after
// the objects are created, and a request in that moment is refused ("forbidden").
func (c *Cluster) Grant(t testing.TB, ns, name string, subject rbacv1.Subject, rules ...rbacv1.PolicyRule) {
	t.Helper()
	ctx := testContext(t)
	rbac := c.client.RbacV1()
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	meta := metav1.ObjectMeta{Name: name, Namespace: ns}
	if subject.Kind != rbacv1.ServiceAccountKind && subject.APIGroup == "" {
		subject.APIGroup = rbacv1.GroupName
	}
	var err error
	if ns == "" {
		roleRef.Kind = "ClusterRole"
		if _, err = rbac.ClusterRoles().Create(ctx, &rbacv1.ClusterRole{ObjectMeta: meta, Rules: rules}, metav1.CreateOptions{}); err == nil {
			_, err = rbac.ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: meta, RoleRef: roleRef, Subjects: []rbacv1.Subject{subject}}, metav1.CreateOptions{})
		}
	} else if _, err = rbac.Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: meta, Rules: rules}, metav1.CreateOptions{}); err == nil {
		_, err = rbac.RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{ObjectMeta: meta, RoleRef: roleRef, Subjects: []rbacv1.Subject{subject}}, metav1.CreateOptions{})
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var errs []error
		if ns == "" {
			errs = append(errs, rbac.ClusterRoleBindings().Delete(ctx, name, metav1.DeleteOptions{}), rbac.ClusterRoles().Delete(ctx, name, metav1.DeleteOptions{}))
		} else {
			errs = append(errs, rbac.RoleBindings(ns).Delete(ctx, name, metav1.DeleteOptions{}), rbac.Roles(ns).Delete(ctx, name, metav1.DeleteOptions{}))
		}
		for _, err := range errs {
			// A namespace deleted first takes its Role and RoleBinding with it.
			if err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("remove grant %s: %v", name, err)
			}
		}
	})
	if err != nil {
		t.Fatalf("grant %s to %s %s: %v", name, subject.Kind, subject.Name, err)
	}
	if err := WaitForAccess(ctx, c.client, ns, subject, rules); err != nil {
		t.Fatal(err)
	}
}

// WaitForAccess asks the API server with SubjectAccessReview, until it agrees or ctx ends,
// whether subject may perform every verb on every resource of rules in namespace ns ("" for
// cluster-wide). It is how a test knows a binding it just created (itself or through helm) is
// in force. There is nothing to watch for that: the authorizer's caches are internal to the
// API server, so this asks again every 50 ms.
func WaitForAccess(ctx context.Context, client kubernetes.Interface, ns string, subject rbacv1.Subject, rules []rbacv1.PolicyRule) error {
	user, groups := subjectIdentity(subject)
	for _, attrs := range ruleAttributes(ns, rules) {
		var last string
		err := wait.PollUntilContextCancel(ctx, 50*time.Millisecond, true, func(ctx context.Context) (bool, error) {
			sar := &authorizationv1.SubjectAccessReview{Spec: attrs.SubjectAccessReviewSpec}
			sar.Spec.User, sar.Spec.Groups = user, groups
			r, err := client.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			switch {
			case err != nil:
				last = err.Error() // the API server may be busy: ask again; ctx bounds the wait
			case r.Status.Allowed:
				return true, nil
			default:
				last = r.Status.Reason
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("%s %s is still not allowed to %s (last answer: %q): %w", subject.Kind, subject.Name, attrs.label, last, err)
		}
	}
	return nil
}

// WaitForBindings waits (WaitForAccess) until every subject of every RoleBinding (in any
// namespace) and ClusterRoleBinding that labelSelector selects and match accepts (nil: all)
// has the access its role grants: for bindings a tool such as helm created.
func WaitForBindings(ctx context.Context, client kubernetes.Interface, labelSelector string, match func(metav1.ObjectMeta) bool) error {
	if match == nil {
		match = func(metav1.ObjectMeta) bool { return true }
	}
	rbac := client.RbacV1()
	rules := func(ref rbacv1.RoleRef, ns string) ([]rbacv1.PolicyRule, error) {
		if ref.Kind == "Role" {
			r, err := rbac.Roles(ns).Get(ctx, ref.Name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			return r.Rules, nil
		}
		r, err := rbac.ClusterRoles().Get(ctx, ref.Name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return r.Rules, nil
	}
	type binding struct {
		kind, ns, name string
		ref            rbacv1.RoleRef
		subjects       []rbacv1.Subject
	}
	var all []binding
	rbs, err := rbac.RoleBindings(metav1.NamespaceAll).List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
	if err != nil {
		return err
	}
	for _, b := range rbs.Items {
		if match(b.ObjectMeta) {
			all = append(all, binding{"RoleBinding", b.Namespace, b.Name, b.RoleRef, b.Subjects})
		}
	}
	crbs, err := rbac.ClusterRoleBindings().List(ctx, metav1.ListOptions{LabelSelector: labelSelector})
	if err != nil {
		return err
	}
	for _, b := range crbs.Items {
		if match(b.ObjectMeta) {
			all = append(all, binding{"ClusterRoleBinding", "", b.Name, b.RoleRef, b.Subjects})
		}
	}
	for _, b := range all {
		rs, err := rules(b.ref, b.ns)
		if err != nil {
			return fmt.Errorf("%s %s: role %s: %w", b.kind, b.name, b.ref.Name, err)
		}
		for _, s := range b.subjects {
			if s.Kind == rbacv1.ServiceAccountKind && s.Namespace == "" {
				s.Namespace = b.ns
			}
			if err := WaitForAccess(ctx, client, b.ns, s, rs); err != nil {
				return fmt.Errorf("%s %s: %w", b.kind, b.name, err)
			}
		}
	}
	return nil
}

// subjectIdentity is the user and groups the API server gives a request from subject. A group
// is asked about through a user nobody binds, so only the group's bindings can allow it.
func subjectIdentity(s rbacv1.Subject) (string, []string) {
	switch s.Kind {
	case rbacv1.ServiceAccountKind:
		return "system:serviceaccount:" + s.Namespace + ":" + s.Name,
			[]string{"system:serviceaccounts", "system:serviceaccounts:" + s.Namespace, "system:authenticated"}
	case rbacv1.GroupKind:
		return "testcluster:access-probe", []string{s.Name, "system:authenticated"}
	default:
		return s.Name, []string{"system:authenticated"}
	}
}

type accessQuestion struct {
	label string
	authorizationv1.SubjectAccessReviewSpec
}

// ruleAttributes turns rules into one access question per verb and resource. Wildcards are
// asked as they are: a rule's "*" matches a requested "*".
func ruleAttributes(ns string, rules []rbacv1.PolicyRule) []accessQuestion {
	var out []accessQuestion
	for _, r := range rules {
		for _, verb := range r.Verbs {
			for _, path := range r.NonResourceURLs {
				out = append(out, accessQuestion{label: verb + " " + path, SubjectAccessReviewSpec: authorizationv1.SubjectAccessReviewSpec{
					NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: path, Verb: verb},
				}})
			}
			group := ""
			if len(r.APIGroups) > 0 {
				group = r.APIGroups[0]
			}
			name := ""
			if len(r.ResourceNames) > 0 {
				name = r.ResourceNames[0]
			}
			for _, res := range r.Resources {
				resource, sub, _ := strings.Cut(res, "/")
				label := verb + " " + res
				if group != "" {
					label += "." + group
				}
				if ns != "" {
					label += " in " + ns
				}
				out = append(out, accessQuestion{label: label, SubjectAccessReviewSpec: authorizationv1.SubjectAccessReviewSpec{
					ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: group, Resource: resource, Subresource: sub, Name: name},
				}})
			}
		}
	}
	return out
}

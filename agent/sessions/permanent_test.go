package sessions

import (
	"errors"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

func TestQuotaRefusalIsRetried(t *testing.T) {
	pods := schema.GroupResource{Resource: "pods"}
	quota := apierrors.NewForbidden(pods, "cake-session-x", errors.New("exceeded quota: compute, requested: cpu=250m, used: cpu=2, limited: cpu=2"))
	if permanent(quota) {
		t.Error("a ResourceQuota refusal must be retried")
	}
	psa := apierrors.NewForbidden(pods, "cake-session-x", errors.New(`violates PodSecurity "restricted:latest"`))
	if !permanent(psa) {
		t.Error("an admission refusal must fail the session")
	}
}

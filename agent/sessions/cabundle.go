package sessions

import (
	"context"
	"crypto/x509"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// checkCABundle makes sure the CA bundle ConfigMap the pod mounts exists in the session
// namespace and holds a certificate under its key. Without the check the kubelet keeps
// the pod in ContainerCreating (FailedMount) until StartTimeout, with the cause only in
// an Event. A missing bundle is treated as permanent: the session fails at once and
// `start` retries it once the ConfigMap is there.
func (c *Controller) checkCABundle(ctx context.Context) error {
	name, key, ns := c.cfg.CABundleConfigMap, c.cfg.CABundleKey, c.cfg.Namespace
	if name == "" {
		return nil
	}
	missing := func(format string, args ...any) error {
		return &permanentError{err: fmt.Errorf(format, args...), reason: ReasonCABundleMissing}
	}
	cm, err := c.kube.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return missing("the sessions' CA bundle ConfigMap %q does not exist in the session namespace %q: create it there "+
			"with the PEM bundle under key %q, or fix the chart value sessions.caBundle.configMapName (agent flag --session-ca-configmap)", name, ns, key)
	case apierrors.IsForbidden(err):
		return missing("the agent may not read the sessions' CA bundle ConfigMap %q in namespace %q: grant its service account get on that "+
			"ConfigMap (the chart does when sessions.caBundle.configMapName is set): %s", name, ns, apiMessage(err))
	case err != nil:
		return fmt.Errorf("read the sessions' CA bundle ConfigMap %s/%s: %w", ns, name, err)
	}
	pem, ok := cm.Data[key]
	if !ok {
		if b, inBinary := cm.BinaryData[key]; inBinary {
			pem, ok = string(b), true
		}
	}
	if !ok {
		return missing("the sessions' CA bundle ConfigMap %q in namespace %q has no key %q: put the PEM bundle there, "+
			"or set the chart value sessions.caBundle.key (agent flag --session-ca-key) to the key that holds it", name, ns, key)
	}
	if !x509.NewCertPool().AppendCertsFromPEM([]byte(pem)) {
		return missing("key %q of the sessions' CA bundle ConfigMap %q in namespace %q holds no PEM certificate: "+
			"it must be the complete bundle of CAs sessions trust (-----BEGIN CERTIFICATE----- blocks)", key, name, ns)
	}
	return nil
}

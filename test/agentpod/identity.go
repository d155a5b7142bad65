package agentpod

import (
	"context"
	"fmt"
	"os"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ServiceAccountKubeconfig writes to path a kubeconfig for the cluster of cfg that
// authenticates as ServiceAccount namespace/name with a fresh token (TokenRequest, valid for
// ttl), with namespace as its default. With pod set the token is bound to that pod, like the
// projected token the kubelet mounts into it, so it dies with the pod. A process given this
// kubeconfig has the pod's identity and exactly the RBAC its ServiceAccount has.
func ServiceAccountKubeconfig(ctx context.Context, kube kubernetes.Interface, cfg *rest.Config, namespace, name string, pod *corev1.Pod, ttl time.Duration, path string) error {
	spec := authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr(int64(ttl / time.Second))}
	if pod != nil {
		spec.BoundObjectRef = &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}
	}
	tr, err := kube.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{Spec: spec}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for ServiceAccount %s/%s: %w", namespace, name, err)
	}
	cluster := &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	if len(cluster.CertificateAuthorityData) == 0 && cfg.CAFile != "" {
		if cluster.CertificateAuthorityData, err = os.ReadFile(cfg.CAFile); err != nil {
			return err
		}
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["cluster"] = cluster
	kc.AuthInfos["serviceaccount"] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["serviceaccount"] = &clientcmdapi.Context{Cluster: "cluster", AuthInfo: "serviceaccount", Namespace: namespace}
	kc.CurrentContext = "serviceaccount"
	return clientcmd.WriteToFile(*kc, path)
}

func ptr[T any](v T) *T { return &v }

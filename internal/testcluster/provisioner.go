package testcluster

import (
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

const (
	// StorageClassName is the real node's default StorageClass: claims that name no class get
	// a host-path volume on the node from the built-in provisioner.
	StorageClassName = "cake-hostpath"
	provisionerName  = "testcluster.cake.ai/hostpath"
)

// startProvisioner installs the default StorageClass and provisions each of its claims with a
// host-path PersistentVolume in a folder of its own under dir (mode 0777: fsGroup does not
// apply to host paths, and the pods run as various non-root users), like local-path-provisioner.
// A deleted claim's volume and folder go with it. It stops with the cluster.
func (c *Cluster) startProvisioner(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stopProvisioner = cancel
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       provisionerName,
		ReclaimPolicy:     ptr(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr(storagev1.VolumeBindingImmediate),
	}
	if _, err := c.client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		cancel()
		return err
	}
	factory := informers.NewSharedInformerFactory(c.client, 0)
	claims := factory.Core().V1().PersistentVolumeClaims().Informer()
	provision := func(obj any) {
		pvc, ok := obj.(*corev1.PersistentVolumeClaim)
		if !ok || pvc.Spec.VolumeName != "" || pvc.DeletionTimestamp != nil {
			return
		}
		if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != StorageClassName {
			return
		}
		path := filepath.Join(dir, pvc.Namespace+"-"+pvc.Name+"-"+string(pvc.UID)[:8])
		if err := os.MkdirAll(path, 0o777); err != nil {
			c.logf("provisioner: %v", err)
			return
		}
		_ = os.Chmod(path, 0o777) // umask
		size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{
				Name:        "pvc-" + string(pvc.UID),
				Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": provisionerName},
			},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
				AccessModes:                   pvc.Spec.AccessModes,
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
				StorageClassName:              StorageClassName,
				ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
				PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{
					Path: path, Type: ptr(corev1.HostPathDirectory),
				}},
			},
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if _, err := c.client.CoreV1().PersistentVolumes().Create(cctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			c.logf("provisioner: create volume for %s/%s: %v", pvc.Namespace, pvc.Name, err)
		}
	}
	_, err := claims.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    provision,
		UpdateFunc: func(_, obj any) { provision(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			pvc, ok := obj.(*corev1.PersistentVolumeClaim)
			if !ok || pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != StorageClassName {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			pvName := "pvc-" + string(pvc.UID)
			if pv, err := c.client.CoreV1().PersistentVolumes().Get(cctx, pvName, metav1.GetOptions{}); err == nil && pv.Spec.HostPath != nil {
				_ = os.RemoveAll(pv.Spec.HostPath.Path)
			}
			if err := c.client.CoreV1().PersistentVolumes().Delete(cctx, pvName, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				c.logf("provisioner: delete volume %s: %v", pvName, err)
			}
		},
	})
	if err != nil {
		cancel()
		return err
	}
	factory.Start(ctx.Done())
	return nil
}

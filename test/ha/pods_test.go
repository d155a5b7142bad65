package ha

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	apiv1 "github.com/cakeai/cake-agents/pkg/api/v1"
)

// podLog watches the session pods of a namespace from before a scenario starts, so
// that it sees every pod ever created — one that came and went too, which a final
// listing would miss.
type podLog struct {
	mu sync.Mutex
	// made is every pod UID seen per session; live the ones not yet gone.
	made, live map[string]map[types.UID]bool
	// maxLive is the most pods a session had at once; maxOwner the most live pods of
	// one owner at once.
	maxLive   map[string]int
	ownerLive map[string]map[types.UID]bool
	maxOwner  map[string]int
}

func watchPods(tb testing.TB, kube kubernetes.Interface, ns string) *podLog {
	tb.Helper()
	l := &podLog{
		made: map[string]map[types.UID]bool{}, live: map[string]map[types.UID]bool{}, maxLive: map[string]int{},
		ownerLive: map[string]map[types.UID]bool{}, maxOwner: map[string]int{},
	}
	f := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = apiv1.LabelName + "=" + apiv1.SessionAppName }))
	inf := f.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { l.saw(o, false) },
		UpdateFunc: func(_, o any) { l.saw(o, false) },
		DeleteFunc: func(o any) { l.saw(o, true) },
	}); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f.Start(ctx.Done())
	tb.Cleanup(func() { cancel(); f.Shutdown() })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		tb.Fatal("pod watch did not sync")
	}
	return l
}

func (l *podLog) saw(o any, deleted bool) {
	if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	id, owner := p.Labels[apiv1.LabelSessionID], p.Labels[apiv1.LabelOwnerID]
	l.mu.Lock()
	defer l.mu.Unlock()
	add := func(m map[string]map[types.UID]bool, k string) map[types.UID]bool {
		if m[k] == nil {
			m[k] = map[types.UID]bool{}
		}
		return m[k]
	}
	add(l.made, id)[p.UID] = true
	// A pod being deleted still counts as live: it may be running until it is gone.
	if deleted {
		delete(add(l.live, id), p.UID)
		delete(add(l.ownerLive, owner), p.UID)
		return
	}
	add(l.live, id)[p.UID] = true
	add(l.ownerLive, owner)[p.UID] = true
	l.maxLive[id] = max(l.maxLive[id], len(l.live[id]))
	l.maxOwner[owner] = max(l.maxOwner[owner], len(l.ownerLive[owner]))
}

// created is how many distinct pods session id ever had.
func (l *podLog) created(id string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.made[id])
}

// duplicates lists the sessions that ever had more than one pod at once.
func (l *podLog) duplicates() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for id, n := range l.maxLive {
		if n > 1 {
			out = append(out, fmt.Sprintf("%s (%d pods at once)", id, n))
		}
	}
	sort.Strings(out)
	return out
}

// maxOwnerLive is the most pods owner ever had at once.
func (l *podLog) maxOwnerLive(owner string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.maxOwner[owner]
}

// sessionObjects lists the pods, Secrets and PVCs of sessions in ns by session id,
// straight from the API server.
func sessionObjects(ctx context.Context, kube kubernetes.Interface, ns string) (map[string][]string, error) {
	sel := metav1.ListOptions{LabelSelector: apiv1.LabelName + "=" + apiv1.SessionAppName}
	out := map[string][]string{}
	pods, err := kube.CoreV1().Pods(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, p := range pods.Items {
		kind := "pod"
		if p.DeletionTimestamp != nil {
			kind = "terminating-pod"
		}
		out[p.Labels[apiv1.LabelSessionID]] = append(out[p.Labels[apiv1.LabelSessionID]], kind)
	}
	secrets, err := kube.CoreV1().Secrets(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, s := range secrets.Items {
		out[s.Labels[apiv1.LabelSessionID]] = append(out[s.Labels[apiv1.LabelSessionID]], "secret")
	}
	pvcs, err := kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, sel)
	if err != nil {
		return nil, err
	}
	for _, p := range pvcs.Items {
		out[p.Labels[apiv1.LabelSessionID]] = append(out[p.Labels[apiv1.LabelSessionID]], "pvc")
	}
	for id := range out {
		sort.Strings(out[id])
	}
	return out, nil
}

func has(objs []string, kind string) int {
	n := 0
	for _, o := range objs {
		if o == kind {
			n++
		}
	}
	return n
}

func join(ss []string) string { return strings.Join(ss, ", ") }

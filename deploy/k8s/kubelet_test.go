package k8s

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// Cases from the kubelet's own expansion tests (third_party/forked/golang/expansion).
func TestExpand(t *testing.T) {
	vars := map[string]string{"VAR_A": "A", "VAR_B": "B", "VAR_EMPTY": "", "POD_NAME": "txcoord-0"}
	for in, want := range map[string]string{
		"$(VAR_A)":                        "A",
		"___$(VAR_B)___":                  "___B___",
		"$(VAR_A)-$(VAR_B)":               "A-B",
		"$(VAR_EMPTY)x":                   "x",
		"$(UNDEFINED)":                    "$(UNDEFINED)",
		"$$(VAR_A)":                       "$(VAR_A)",
		"$$$(VAR_A)":                      "$A",
		"$$$$(VAR_A)":                     "$$(VAR_A)",
		"$$":                              "$",
		"$":                               "$",
		"x$":                              "x$",
		"$VAR_A":                          "$VAR_A",
		"$(VAR_A":                         "$(VAR_A",
		"$()":                             "$()",
		"Txcoord-Node: $(POD_NAME)":       "Txcoord-Node: txcoord-0",
		"$(POD_NAME).peers.$(NS).svc:700": "txcoord-0.peers.$(NS).svc:700",
	} {
		if got := Expand(in, vars); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerEnv(t *testing.T) {
	no := false
	yes := true
	c := corev1.Container{Name: "c", Env: []corev1.EnvVar{
		{Name: "NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
		{Name: "ADDR", Value: "$(NAME).svc:$(PORT)"},
		{Name: "TOKEN", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "k", Optional: &no}}},
		{Name: "OPT", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "s"}, Key: "absent", Optional: &yes}}},
		{Name: "PORT", Value: "80"},
	}}
	env, err := ContainerEnv(c, Pod{Name: "p-0", Namespace: "ns"}, map[string]map[string]string{"s": {"k": "secret"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range env {
		got[e.Name] = e.Value
	}
	// PORT is defined after ADDR: a kubelet leaves the reference as written.
	want := map[string]string{"NAME": "p-0", "ADDR": "p-0.svc:$(PORT)", "TOKEN": "secret", "PORT": "80"}
	if len(got) != len(want) {
		t.Errorf("env %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	if _, err := ContainerEnv(c, Pod{Name: "p-0"}, map[string]map[string]string{"s": {}}); err == nil {
		t.Error("a missing required Secret key was accepted")
	}
	if _, err := ContainerEnv(c, Pod{Name: "p-0"}, nil); err == nil {
		t.Error("a missing required Secret was accepted")
	}
}

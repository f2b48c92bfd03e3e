// Package k8s reads the Kubernetes manifests of this directory into k8s.io/api types, the
// way the API server would accept them (strict decoding), and applies the two rules of the
// kustomization and the kubelet that the tests need outside a cluster: kustomize's images
// entries and the $(VAR) expansion of container args and env.
//
// manifests_test.go checks that the manifests agree with each other and with the binary;
// deploy/e2e runs the StatefulSet's pod template in Docker.
package k8s

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// Kustomization is the part of kustomize's Kustomization these manifests use; any other
// field is an error, so a typo cannot pass unnoticed.
type Kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	} `json:"labels,omitempty"`
	Components []string `json:"components,omitempty"`
	Images     []Image  `json:"images,omitempty"`
}

// Image is one kustomize images entry: containers whose image is Name (with any tag)
// get NewName (if set) and NewTag (if set) instead.
type Image struct {
	Name    string `json:"name"`
	NewName string `json:"newName,omitempty"`
	NewTag  string `json:"newTag,omitempty"`
}

// Manifests are the objects of the kustomization in one directory, as written there
// (kustomize's images entries not yet applied: see ImageFor).
type Manifests struct {
	Kustomization Kustomization
	StatefulSet   *appsv1.StatefulSet
	Services      map[string]*corev1.Service // by name
	PDB           *policyv1.PodDisruptionBudget
	NetworkPolicy *networkingv1.NetworkPolicy
}

// DecodeStrict turns YAML into JSON (rejecting duplicate keys) and decodes it into v the
// way the API server's strict field validation does: field names match case-sensitively
// (encoding/json would take "clusterIp" for "clusterIP"), and unknown or duplicate fields
// are errors.
func DecodeStrict(data []byte, v any) error {
	js, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strict, err := kjson.UnmarshalStrict(js, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strict...)
}

// Load decodes dir/kustomization.yaml and every resource it lists, strictly. It is an
// error when a YAML file of dir is not listed, a listed file is missing, a document is of
// a kind these manifests do not use, or there are two StatefulSets.
func Load(dir string) (*Manifests, error) {
	m := &Manifests{Services: map[string]*corev1.Service{}}
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	if err := DecodeStrict(raw, &m.Kustomization); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %w", err)
	}
	k := m.Kustomization
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		return nil, fmt.Errorf("kustomization.yaml: apiVersion/kind %s/%s", k.APIVersion, k.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(k.Resources, base) {
			return nil, fmt.Errorf("%s is not listed in kustomization.yaml", base)
		}
	}
	for _, f := range k.Resources {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return nil, fmt.Errorf("kustomization.yaml lists %s: %w", f, err)
		}
		for i, doc := range splitDocs(raw) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				return nil, fmt.Errorf("%s doc %d: %w", f, i, err)
			}
			var obj any
			var svc *corev1.Service
			switch meta.APIVersion + "/" + meta.Kind {
			case "apps/v1/StatefulSet":
				if m.StatefulSet != nil {
					return nil, fmt.Errorf("%s: a second StatefulSet", f)
				}
				m.StatefulSet = &appsv1.StatefulSet{}
				obj = m.StatefulSet
			case "v1/Service":
				svc = &corev1.Service{}
				obj = svc
			case "networking.k8s.io/v1/NetworkPolicy":
				m.NetworkPolicy = &networkingv1.NetworkPolicy{}
				obj = m.NetworkPolicy
			case "policy/v1/PodDisruptionBudget":
				m.PDB = &policyv1.PodDisruptionBudget{}
				obj = m.PDB
			default:
				return nil, fmt.Errorf("%s doc %d: unexpected %s %s", f, i, meta.APIVersion, meta.Kind)
			}
			if err := DecodeStrict(doc, obj); err != nil {
				return nil, fmt.Errorf("%s doc %d (%s): %w", f, i, meta.Kind, err)
			}
			if svc != nil {
				m.Services[svc.Name] = svc
			}
		}
	}
	return m, nil
}

// ImageFor is the image a container naming image runs once kustomize has applied the
// kustomization's images entries: the entry whose name is image's name (its tag, if any,
// ignored) replaces the name and the tag it sets. Digest references are not used here.
func (m *Manifests) ImageFor(image string) string {
	name, tag := image, ""
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		name, tag = image[:i], image[i+1:]
	}
	for _, e := range m.Kustomization.Images {
		if e.Name != name {
			continue
		}
		if e.NewName != "" {
			name = e.NewName
		}
		if e.NewTag != "" {
			tag = e.NewTag
		}
		break
	}
	if tag == "" {
		return name
	}
	return name + ":" + tag
}

func splitDocs(raw []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(raw), -1) {
		if strings.TrimSpace(stripComments(d)) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

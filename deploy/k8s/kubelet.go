package k8s

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Pod is what a kubelet knows of one pod that the container's environment may refer to
// through the downward API.
type Pod struct {
	Name, Namespace string
}

// EnvVar is one resolved environment variable of a container.
type EnvVar struct{ Name, Value string }

// ContainerEnv resolves c's env as a kubelet does, in order: a value is $(VAR)-expanded
// against the variables before it; fieldRef metadata.name and metadata.namespace come
// from pod; secretKeyRef from secrets (Secret name -> key -> value). A missing Secret or key
// is an error unless the reference is optional (then the variable is left out), as the
// kubelet refuses to start such a container. Any other source (other fieldPaths,
// configMapKeyRef, resourceFieldRef, envFrom) is an error: these manifests use none, and
// a silent stand-in would test something else.
func ContainerEnv(c corev1.Container, pod Pod, secrets map[string]map[string]string) ([]EnvVar, error) {
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("container %s: envFrom is not supported here", c.Name)
	}
	var out []EnvVar
	defined := map[string]string{}
	for _, e := range c.Env {
		val := e.Value
		switch src := e.ValueFrom; {
		case src == nil:
			val = Expand(val, defined)
		case src.FieldRef != nil:
			switch src.FieldRef.FieldPath {
			case "metadata.name":
				val = pod.Name
			case "metadata.namespace":
				val = pod.Namespace
			default:
				return nil, fmt.Errorf("env %s: fieldPath %q is not supported here", e.Name, src.FieldRef.FieldPath)
			}
		case src.SecretKeyRef != nil:
			ref := src.SecretKeyRef
			optional := ref.Optional != nil && *ref.Optional
			sec, ok := secrets[ref.Name]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: secret %q not found", e.Name, ref.Name)
			}
			v, ok := sec[ref.Key]
			if !ok {
				if optional {
					continue
				}
				return nil, fmt.Errorf("env %s: couldn't find key %s in Secret %s", e.Name, ref.Key, ref.Name)
			}
			val = v
		default:
			return nil, fmt.Errorf("env %s: this valueFrom source is not supported here", e.Name)
		}
		out = append(out, EnvVar{e.Name, val})
		defined[e.Name] = val
	}
	return out, nil
}

// Expand replaces every $(VAR) in s by vars[VAR] with Kubernetes' rules for command, args
// and env values: $$ is a literal $ (so $$(VAR) stays "$(VAR)"), a reference to a variable
// that vars lacks stays as written, and a $ followed by anything else, or a "$(" without
// its ")", is kept.
func Expand(s string, vars map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch next := s[i+1]; next {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString("$(")
				i++
				continue
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars[name]; ok {
				b.WriteString(v)
			} else {
				b.WriteString("$(" + name + ")")
			}
			i += 2 + end
		default:
			b.WriteByte('$')
			b.WriteByte(next)
			i++
		}
	}
	return b.String()
}

// ExpandAll is Expand on each of ss, with env as the variables (what a kubelet does to a
// container's command and args).
func ExpandAll(ss []string, env []EnvVar) []string {
	vars := map[string]string{}
	for _, e := range env {
		vars[e.Name] = e.Value
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = Expand(s, vars)
	}
	return out
}

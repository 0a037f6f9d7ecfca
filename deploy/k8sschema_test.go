package deploy

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The Kubernetes schemas the manifests are checked against are the
// official OpenAPI v3 documents of Kubernetes (api/openapi-spec/v3 in the
// kubernetes repository), reduced to the kinds deploy/k8s uses and their
// transitive references, with descriptions dropped. Regenerate with
//
//	go mod download k8s.io/kubernetes@v1.34.1
//	go test ./deploy -run TestManifestSchemas -update-k8s-schemas \
//	    $(go env GOMODCACHE)/k8s.io/kubernetes@v1.34.1/api/openapi-spec/v3
var updateSchemas = flag.String("update-k8s-schemas", "", "regenerate "+schemaFile+" from the Kubernetes api/openapi-spec/v3 `DIR`")

const schemaFile = "testdata/k8s-openapi-schemas.json"

// schemaKinds are the apiVersion/kind pairs taken from the OpenAPI
// documents, and the document each comes from.
var schemaKinds = map[string]string{
	"apps/v1/Deployment":                     "apis__apps__v1_openapi.json",
	"v1/Service":                             "api__v1_openapi.json",
	"v1/ConfigMap":                           "api__v1_openapi.json",
	"autoscaling/v2/HorizontalPodAutoscaler": "apis__autoscaling__v2_openapi.json",
	"policy/v1/PodDisruptionBudget":          "apis__policy__v1_openapi.json",
}

// schemaSet is the generated file: the root schema name of each kind and
// every schema reachable from them.
type schemaSet struct {
	Source  string                    `json:"source"`
	Kinds   map[string]string         `json:"kinds"`
	Schemas map[string]map[string]any `json:"schemas"`
}

const refPrefix = "#/components/schemas/"

// generateSchemas builds the schema set from the OpenAPI documents in dir.
func generateSchemas(dir string) (*schemaSet, error) {
	all := map[string]map[string]any{}
	set := &schemaSet{Source: "kubernetes api/openapi-spec/v3 (" + filepath.Base(filepath.Dir(filepath.Dir(filepath.Dir(dir)))) + "), Apache-2.0; descriptions removed",
		Kinds: map[string]string{}, Schemas: map[string]map[string]any{}}
	for _, file := range slices.Sorted(maps.Values(schemaKinds)) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil {
			return nil, err
		}
		var doc struct {
			Components struct {
				Schemas map[string]map[string]any `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		for name, s := range doc.Components.Schemas {
			all[name] = s
			gvks, _ := s["x-kubernetes-group-version-kind"].([]any)
			for _, g := range gvks {
				m, _ := g.(map[string]any)
				gv := fmt.Sprint(m["version"])
				if grp := fmt.Sprint(m["group"]); grp != "" {
					gv = grp + "/" + gv
				}
				key := gv + "/" + fmt.Sprint(m["kind"])
				if _, want := schemaKinds[key]; want {
					set.Kinds[key] = name
				}
			}
		}
	}
	for k := range schemaKinds {
		if set.Kinds[k] == "" {
			return nil, fmt.Errorf("no schema for %s in %s", k, dir)
		}
	}
	var visit func(name string) error
	visit = func(name string) error {
		if _, done := set.Schemas[name]; done {
			return nil
		}
		s, ok := all[name]
		if !ok {
			return fmt.Errorf("schema %s referenced but not defined", name)
		}
		set.Schemas[name] = s
		var refs []string
		stripSchema(s, &refs)
		for _, r := range refs {
			if err := visit(r); err != nil {
				return err
			}
		}
		return nil
	}
	for _, root := range set.Kinds {
		if err := visit(root); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// stripSchema removes descriptions from a schema and its subschemas and
// collects the names it references.
func stripSchema(s map[string]any, refs *[]string) {
	delete(s, "description")
	delete(s, "example")
	if r, ok := s["$ref"].(string); ok {
		*refs = append(*refs, strings.TrimPrefix(r, refPrefix))
	}
	if props, ok := s["properties"].(map[string]any); ok {
		for _, p := range props {
			if ps, ok := p.(map[string]any); ok {
				stripSchema(ps, refs)
			}
		}
	}
	for _, k := range []string{"items", "additionalProperties", "not"} {
		if sub, ok := s[k].(map[string]any); ok {
			stripSchema(sub, refs)
		}
	}
	for _, k := range []string{"allOf", "anyOf", "oneOf"} {
		if list, ok := s[k].([]any); ok {
			for _, e := range list {
				if sub, ok := e.(map[string]any); ok {
					stripSchema(sub, refs)
				}
			}
		}
	}
}

func loadSchemas() (*schemaSet, error) {
	b, err := os.ReadFile(schemaFile)
	if err != nil {
		return nil, err
	}
	var set schemaSet
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("%s: %w", schemaFile, err)
	}
	return &set, nil
}

// validate checks v (decoded YAML) against schema s and returns every
// violation, each prefixed with its field path. It implements the subset
// of OpenAPI v3 the Kubernetes documents use (type, properties, required,
// items, additionalProperties, enum, allOf/$ref, oneOf, int-or-string,
// preserve-unknown-fields) and is strict like `kubectl apply
// --validate=strict`: a field the schema does not define is an error.
func (set *schemaSet) validate(v any, s map[string]any, path string) []error {
	var errs []error
	fail := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, a...)))
	}
	if r, ok := s["$ref"].(string); ok {
		sub, found := set.Schemas[strings.TrimPrefix(r, refPrefix)]
		if !found {
			fail("schema %s missing from %s", r, schemaFile)
			return errs
		}
		errs = append(errs, set.validate(v, sub, path)...)
	}
	for _, k := range []string{"allOf"} {
		if list, ok := s[k].([]any); ok {
			for _, e := range list {
				if sub, ok := e.(map[string]any); ok {
					errs = append(errs, set.validate(v, sub, path)...)
				}
			}
		}
	}
	if list, ok := s["oneOf"].([]any); ok { // Quantity: string or number; IntOrString
		matched := false
		for _, e := range list {
			if sub, ok := e.(map[string]any); ok && len(set.validate(v, sub, path)) == 0 {
				matched = true
				break
			}
		}
		if !matched {
			fail("%v matches none of %v", v, list)
		}
	}
	if v == nil {
		if n, _ := s["nullable"].(bool); !n && s["type"] != nil {
			fail("null where %v is expected", s["type"])
		}
		return errs
	}
	if ios, _ := s["x-kubernetes-int-or-string"].(bool); ios {
		switch v.(type) {
		case int, string:
		default:
			fail("want an integer or a string, got %T", v)
		}
		return errs
	}
	if enum, ok := s["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		fail("%v is not one of %v", v, enum)
	}
	switch s["type"] {
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			fail("want an object, got %T", v)
			return errs
		}
		props, _ := s["properties"].(map[string]any)
		for _, req := range asStrings(s["required"]) {
			if _, ok := obj[req]; !ok {
				fail("required field %q missing", req)
			}
		}
		preserve, _ := s["x-kubernetes-preserve-unknown-fields"].(bool)
		for _, k := range slices.Sorted(maps.Keys(obj)) {
			sub := path + "." + k
			if p, ok := props[k].(map[string]any); ok {
				errs = append(errs, set.validate(obj[k], p, sub)...)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case map[string]any:
				errs = append(errs, set.validate(obj[k], ap, sub)...)
			case bool:
				if !ap {
					errs = append(errs, fmt.Errorf("%s: unknown field", sub))
				}
			default:
				if props != nil && !preserve {
					errs = append(errs, fmt.Errorf("%s: unknown field", sub))
				}
			}
		}
	case "array":
		arr, ok := v.([]any)
		if !ok {
			fail("want a list, got %T", v)
			return errs
		}
		if items, ok := s["items"].(map[string]any); ok {
			for i, e := range arr {
				errs = append(errs, set.validate(e, items, fmt.Sprintf("%s[%d]", path, i))...)
			}
		}
	case "string":
		if _, ok := v.(string); !ok {
			fail("want a string, got %T (%v): quote it", v, v)
		}
	case "integer":
		switch n := v.(type) {
		case int:
		case float64:
			if n != math.Trunc(n) {
				fail("want an integer, got %v", n)
			}
		default:
			fail("want an integer, got %T", v)
		}
	case "number":
		switch v.(type) {
		case int, float64:
		default:
			fail("want a number, got %T", v)
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("want true or false, got %T (%v)", v, v)
		}
	}
	return errs
}

func asStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, e := range l {
		out = append(out, fmt.Sprint(e))
	}
	return out
}

// validateObject checks one manifest object against its kind's schema.
func (set *schemaSet) validateObject(obj map[string]any) error {
	key := fmt.Sprintf("%v/%v", obj["apiVersion"], obj["kind"])
	root, ok := set.Kinds[key]
	if !ok {
		return fmt.Errorf("no schema for %s", key)
	}
	return errors.Join(set.validate(obj, set.Schemas[root], key)...)
}

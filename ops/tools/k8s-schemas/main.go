// Command k8s-schemas turns the Kubernetes OpenAPI v2 document (api/openapi-spec/swagger.json of the
// k8s.io/kubernetes module, fetched through the Go module proxy) into the per-kind standalone JSON
// schemas that kubeconform reads from a local folder. kubeconform normally downloads those schemas
// from GitHub at run time, which this project cannot reach; the conversion follows what
// openapi2jsonschema does for the published schemas:
//   - each kind gets one file, <kind>-<group prefix>-<version>.json, holding only the definitions it
//     reaches, so that $ref "#/definitions/..." resolves inside the file;
//   - IntOrString and Quantity accept both strings and numbers (the OpenAPI document says "string"
//     with a format that JSON Schema does not know, which would reject `port: 8080` or `cpu: 1`);
//   - strict: objects with declared properties reject unknown ones (a misspelt field fails).
//
// Usage: k8s-schemas -swagger swagger.json -out DIR -version v1.37.2
// writes DIR/v1.37.2-standalone-strict/*.json (the layout of kubeconform's -schema-location DIR).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

type schema = map[string]any

const (
	intOrString = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
	quantity    = "io.k8s.apimachinery.pkg.api.resource.Quantity"
	refPrefix   = "#/definitions/"
)

func main() {
	swaggerPath := flag.String("swagger", "", "path of the Kubernetes swagger.json")
	outDir := flag.String("out", "", "output folder (kubeconform -schema-location)")
	version := flag.String("version", "", "Kubernetes version of the document, e.g. v1.37.2")
	flag.Parse()
	if *swaggerPath == "" || *outDir == "" || !strings.HasPrefix(*version, "v") {
		fmt.Fprintln(os.Stderr, "usage: k8s-schemas -swagger FILE -out DIR -version vX.Y.Z")
		os.Exit(2)
	}
	n, err := run(*swaggerPath, *outDir, *version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "k8s-schemas:", err)
		os.Exit(1)
	}
	fmt.Printf("k8s-schemas: %d kinds written for Kubernetes %s\n", n, *version)
}

func run(swaggerPath, outDir, version string) (int, error) {
	raw, err := os.ReadFile(swaggerPath)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Definitions map[string]schema `json:"definitions"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		return 0, fmt.Errorf("%s: %w", swaggerPath, err)
	}
	if len(doc.Definitions) == 0 {
		return 0, fmt.Errorf("%s has no definitions", swaggerPath)
	}
	defs := map[string]any{}
	for name, def := range doc.Definitions {
		switch name {
		case intOrString:
			defs[name] = eitherStringOr("integer", def["description"])
		case quantity:
			defs[name] = eitherStringOr("number", def["description"])
		default:
			defs[name] = normalise(def)
		}
	}

	// Written to a sibling folder and renamed, so that an interrupted run never leaves half a set.
	final := filepath.Join(outDir, version+"-standalone-strict")
	tmp := final + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return 0, err
	}
	names := make([]string, 0, len(defs))
	for name := range defs {
		names = append(names, name)
	}
	sort.Strings(names)
	written := 0
	for _, name := range names {
		def := defs[name].(schema)
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, item := range gvks {
			gvk, _ := item.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			if version == "" || kind == "" {
				continue
			}
			root := kindSchema(defs, def, group, version, kind)
			data, err := json.Marshal(root)
			if err != nil {
				return 0, err
			}
			if err := os.WriteFile(filepath.Join(tmp, fileName(group, version, kind)), data, 0o644); err != nil {
				return 0, err
			}
			written++
		}
	}
	if written == 0 {
		return 0, fmt.Errorf("%s: no definition carries x-kubernetes-group-version-kind", swaggerPath)
	}
	if err := os.RemoveAll(final); err != nil {
		return 0, err
	}
	return written, os.Rename(tmp, final)
}

// fileName is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json: the kind in lower case, the
// first label of the API group (none for the core group) and the version.
func fileName(group, version, kind string) string {
	name := strings.ToLower(kind)
	if group != "" {
		name += "-" + strings.ToLower(strings.Split(group, ".")[0])
	}
	return name + "-" + strings.ToLower(version) + ".json"
}

func eitherStringOr(other string, description any) schema {
	s := schema{"oneOf": []any{schema{"type": "string"}, schema{"type": other}}}
	if description != nil {
		s["description"] = description
	}
	return s
}

// normalise returns a deep copy with int-or-string formats widened and unknown properties rejected.
func normalise(v any) any {
	switch node := v.(type) {
	case map[string]any:
		if node["format"] == "int-or-string" {
			return eitherStringOr("integer", node["description"])
		}
		out := make(schema, len(node)+1)
		for k, child := range node {
			out[k] = normalise(child)
		}
		_, hasProps := node["properties"]
		_, hasAdditional := node["additionalProperties"]
		preserve, _ := node["x-kubernetes-preserve-unknown-fields"].(bool)
		if hasProps && !hasAdditional && !preserve {
			out["additionalProperties"] = false
		}
		return out
	case []any:
		out := make([]any, len(node))
		for i, child := range node {
			out[i] = normalise(child)
		}
		return out
	default:
		return v
	}
}

// kindSchema is the definition of one kind with apiVersion and kind pinned, plus every definition
// it reaches through $ref.
func kindSchema(defs map[string]any, def schema, group, version, kind string) schema {
	root := make(schema, len(def)+2)
	for k, v := range def {
		root[k] = v
	}
	apiVersion := version
	if group != "" {
		apiVersion = group + "/" + version
	}
	if props, ok := def["properties"].(schema); ok {
		pinned := make(schema, len(props))
		for k, v := range props {
			pinned[k] = v
		}
		pinned["apiVersion"] = withEnum(props["apiVersion"], apiVersion)
		pinned["kind"] = withEnum(props["kind"], kind)
		root["properties"] = pinned
	}
	reached := map[string]any{}
	collectRefs(root, defs, reached)
	root["definitions"] = reached
	root["$schema"] = "http://json-schema.org/draft-07/schema#"
	return root
}

func withEnum(prop any, value string) schema {
	out := schema{"type": "string"}
	if p, ok := prop.(schema); ok {
		for k, v := range p {
			out[k] = v
		}
	}
	out["enum"] = []any{value}
	return out
}

func collectRefs(v any, defs map[string]any, reached map[string]any) {
	switch node := v.(type) {
	case map[string]any:
		if ref, ok := node["$ref"].(string); ok && strings.HasPrefix(ref, refPrefix) {
			name := strings.TrimPrefix(ref, refPrefix)
			if _, seen := reached[name]; !seen {
				if def, ok := defs[name]; ok {
					reached[name] = def
					collectRefs(def, defs, reached)
				}
			}
		}
		for _, child := range node {
			collectRefs(child, defs, reached)
		}
	case []any:
		for _, child := range node {
			collectRefs(child, defs, reached)
		}
	}
}

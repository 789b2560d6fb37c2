// Command yaml2json prints the documents of each YAML file as one JSON array, so that the tests
// can make structural assertions on manifests and configs without a YAML library in package.json.
// Anchors and merge keys are resolved; a file that does not parse is an error naming it.
//
// Usage: yaml2json FILE...   prints {"FILE": [doc, ...], ...}
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: yaml2json FILE...")
		os.Exit(2)
	}
	out := map[string][]any{}
	for _, path := range os.Args[1:] {
		docs, err := readDocs(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "yaml2json: %s: %v\n", path, err)
			os.Exit(1)
		}
		out[path] = docs
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "yaml2json:", err)
		os.Exit(1)
	}
}

func readDocs(path string) ([]any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	docs := []any{}
	for {
		var doc any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

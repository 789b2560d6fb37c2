// Command compose-check loads a Compose file with compose-go, the loader inside `docker compose`:
// schema validation, interpolation, merging and the consistency checks (unknown services in
// depends_on, undeclared volumes or networks...). No Docker engine runs where the tests do, so this
// is the part of `docker compose config` that can run; the normalised project is printed as JSON
// for the tests' structural assertions.
//
// Usage: compose-check [-env KEY=VALUE]... FILE...
// Interpolation sees only the -env values (never the caller's environment), so the result does
// not depend on who runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type envList []string

func (e *envList) String() string     { return strings.Join(*e, ",") }
func (e *envList) Set(v string) error { *e = append(*e, v); return nil }

func main() {
	var env envList
	flag.Var(&env, "env", "KEY=VALUE visible to interpolation (repeatable)")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: compose-check [-env KEY=VALUE]... FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(flag.Args(),
		cli.WithName("bikeshare"),
		cli.WithEnv(env),
		cli.WithResolvedPaths(true),
		cli.WithConsistency(true),
	)
	if err == nil {
		err = check(options)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-check:", err)
		os.Exit(1)
	}
}

func check(options *cli.ProjectOptions) error {
	project, err := cli.ProjectFromOptions(context.Background(), options)
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

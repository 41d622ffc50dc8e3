// Package flagenv gives command-line flags an environment-variable fallback,
// the way CloudFormation user data, systemd EnvironmentFile and ECS task
// definitions configure a program: a flag given on the command line wins,
// else PREFIX_FLAG_NAME from the environment, else the default.
package flagenv

import (
	"flag"
	"fmt"
	"strings"
)

// Name returns the environment variable for a flag: prefix + the flag's
// name in upper case with dashes as underscores ("APP_", "proxy-protocol"
// -> "APP_PROXY_PROTOCOL").
func Name(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Apply sets every flag of fs that the command line did not set from its
// environment variable, when lookup finds one. Call it after fs.Parse. The
// error names the variable and its value; the first bad value stops it.
func Apply(fs *flag.FlagSet, prefix string, lookup func(string) (string, bool)) error {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || err != nil {
			return
		}
		env := Name(prefix, f.Name)
		if v, ok := lookup(env); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("invalid value %q for %s: %w", v, env, e)
			}
		}
	})
	return err
}

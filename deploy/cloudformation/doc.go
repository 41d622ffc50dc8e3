// Package cloudformation holds the originlens CloudFormation templates (the
// YAML files beside this one) and, in its tests, their offline checks: the
// templates load with their short-form intrinsic tags, cfn-lint reports
// nothing, the invariants of the blog's architecture hold for every value of
// the parameters that switch them, and the app's command line that the user
// data and the systemd unit build starts the real binary.
//
// The package has no Go API; README.md is the deploy guide.
package cloudformation

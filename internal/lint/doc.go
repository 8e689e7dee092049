// Package lint holds repository-wide checks that run as ordinary tests:
// dependency direction between the top-level packages and forbidden imports
// (the Pebble lint_test.go pattern).
package lint

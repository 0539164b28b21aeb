#!/usr/bin/env bash
# Prints the project's version: [workspace.package] version in Cargo.toml, the image tag.
cd "$(dirname "$0")/.." || exit 1
sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml

//! Support for workspace-level tests.

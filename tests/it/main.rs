//! The integration-test binary: one module per area.

mod support;

mod hash;
mod probe;
mod scan;

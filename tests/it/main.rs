//! The integration-test binary: one module per area, shared helpers in `support`.

mod support;

mod cli_records;
mod hub;
mod manifest;
mod plan;
mod store;
mod watch;

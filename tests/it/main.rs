//! The integration-test binary: one module per area, shared helpers in `support`.

mod support;

mod apply;
mod cli_records;
mod deploy;
mod diff;
mod download;
mod faults;
mod hash;
mod hub;
mod install;
mod invocation;
mod load;
mod manifest;
mod plan;
mod preload;
mod probe;
mod scan;
mod status;
mod store;
mod unknown;
mod watch;
mod watch_real;

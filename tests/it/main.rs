//! The integration-test binary: one module per area, shared helpers in `support`.

mod support;

mod adopt;
mod adopt_blobs;
mod apply;
mod cli_apply;
mod cli_context;
mod cli_records;
mod deploy;
mod diff;
mod diff_url;
mod download;
mod errors;
mod faults;
mod hash;
mod hub;
mod install;
mod invocation;
mod layouts;
mod load;
mod manifest;
mod oci;
mod oci_push;
mod plan;
mod preload;
mod probe;
mod readme;
mod scan;
mod shape;
mod status;
mod store;
mod sync;
mod transfer;
mod unknown;
mod watch;
mod watch_real;

//! cniscope's library: everything the `cniscope` binary does, as plain modules with narrow inputs
//! and outputs, so that tests, benchmarks and fuzz targets can drive each stage without the
//! kernel.

pub mod agent;
pub mod clock;
pub mod correlate;
pub mod digits;
pub mod events;
pub mod exec;
pub mod k8s;
pub mod kernel;
pub mod netlink;
pub mod pipeline;
pub mod record;
pub mod replay;
pub mod ui;

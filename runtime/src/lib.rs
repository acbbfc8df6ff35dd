//! replog-runtime: the real driver of `replog-core` (mio TCP, durable files). Filled by the
//! runtime issue; today it only names what it will drive.

#![forbid(unsafe_code)]

pub use replog_core as core;

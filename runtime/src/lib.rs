//! replog-runtime: the real driver of `replog-core`. One mio event loop per node turns sockets,
//! files and the clock into core events, and carries out the core's actions in order. It makes
//! no protocol decisions.

#![forbid(unsafe_code)]

pub mod address;
pub mod client;
mod clients;
pub mod codec;
mod command_ids;
pub mod connection;
pub mod driver;
pub mod fnv;
pub mod frame;
pub mod fs;
pub mod image;
pub mod inspect;
mod joining;
pub mod limits;
pub mod members;
pub mod metrics;
mod peers;
pub mod reader;
mod reading;
mod records;
pub mod retention;
mod segment_index;
mod segments;
pub mod server;
pub mod session;
pub mod sessions;
pub mod status;
pub mod storage;
pub mod tls;

pub use members::legacy_id;
pub use server::{run, NodeOptions, RuntimeError};

//! sip-filter's userspace: loads the XDP program, configures it, and reads it back.
//! The binary's commands live in `main.rs` and `cli/`; tests use this library to load
//! the real program.

pub mod bpf_sys;
pub mod check;
pub mod config;
pub mod countries;
pub mod crowdsec;
pub mod destinations;
pub mod drops;
pub mod duration;
pub mod events;
pub mod explain;
pub mod filter;
pub mod interfaces;
pub mod learnt;
pub mod lists;
pub mod logging;
pub mod metrics;
pub mod pins;
pub mod replay;
pub mod runtime;
pub mod service_manager;
pub mod settings;
pub mod state;
pub mod stats;

pub use filter::{
    AttachMode, AttachedMode, Capacities, EgressAttachment, EgressMode, Filter, FilterError,
};
pub use settings::{NotSipPolicy, Settings};

//! Portico's autoscaling: how many workers an endpoint should run.
//!
//! The policy is plain synchronous code with the clock passed in, so its tests run on
//! virtual time; actuators (which start and stop workers) and metric sources live beside it.
//!
//! Layout:
//! - `settings`: [`ScalingSettings`] and [`Metric`], validated the same way whether they come
//!   from the config file or the admin API.

mod settings;

pub use settings::{Metric, Problem, ScalingSettings};

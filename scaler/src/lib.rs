//! Portico's autoscaling: how many workers an endpoint should run.
//!
//! The policy is plain synchronous code with the clock passed in, so its tests run on
//! virtual time; actuators (which start and stop workers) and metric sources live beside it.
//!
//! Layout:
//! - `settings`: [`ScalingSettings`] and [`Metric`], validated the same way whether they come
//!   from the config file or the admin API.
//! - `policy`: [`Policy`], the rules of DESIGN.md §4, fed a [`Sample`] per tick; [`Mode`].
//! - `decision`: [`Decision`], what the policy wants and the [`Reason`] why.
//! - `window`: time-weighted averages and maxima over the stable and panic windows.

mod decision;
mod policy;
mod settings;
mod window;

pub use decision::{Decision, Direction, Reason};
pub use policy::{Mode, Policy, Sample};
pub use settings::{Metric, Problem, ScalingSettings};

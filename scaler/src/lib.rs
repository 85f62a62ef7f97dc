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
//! - `actuator`: the [`Actuator`] trait that turns a count into replicas, and the [`Hooks`]
//!   through which the gateway hears about them ([`ReplicaEvent`]).
//! - `process`: [`ProcessActuator`] (`kind = "process"`), replicas as child processes.
//! - `fixed`: [`FixedActuator`] (`kind = "static"`), workers at fixed addresses.
//! - `command`: [`ExternalActuator`] for workers another system runs: a scale command
//!   (`kind = "command"`) or the gateway's Kubernetes client.
//! - `logs`: the per-replica rings of worker output ([`LogLine`]).
//! - [`exposition`]: one gauge out of a worker's Prometheus `/metrics` page.

mod actuator;
mod command;
mod decision;
pub mod exposition;
mod fixed;
mod logs;
mod policy;
mod process;
mod settings;
mod window;

pub use actuator::{Actuator, Hooks, Replica, ReplicaEvent, ReplicaState, RestartOutcome};
pub use command::{Apply, CommandSpec, ExternalActuator};
pub use decision::{Decision, Direction, Reason};
pub use fixed::FixedActuator;
pub use logs::{LogLine, LogStream};
pub use policy::{Mode, Policy, Sample};
pub use process::{ProcessActuator, ProcessSpec};
pub use settings::{Metric, Problem, ScalingSettings};

//! Signals to a worker's process group.
//!
//! Each worker is spawned as the leader of a new process group (pgid = its pid), so a
//! signal to the group also reaches whatever the worker started itself (vLLM's engine
//! processes, a shell's children). The pgid stays valid while any member lives: the kernel
//! does not hand out a pid that is still some group's id, so signalling the group after the
//! leader was reaped still only reaches its stragglers.

use rustix::io::Errno;
use rustix::process::{Pid, Signal, kill_process_group};

/// The process group led by one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Group(Pid);

impl Group {
    /// The group whose leader has process id `pid`; `None` for ids that cannot be one.
    pub(super) fn led_by(pid: u32) -> Option<Group> {
        i32::try_from(pid).ok().and_then(Pid::from_raw).map(Group)
    }

    /// Asks every member to stop (SIGTERM).
    pub(super) fn terminate(self) {
        self.signal(Signal::TERM);
    }

    /// Stops every member at once (SIGKILL).
    pub(super) fn kill(self) {
        self.signal(Signal::KILL);
    }

    fn signal(self, signal: Signal) {
        match kill_process_group(self.0, signal) {
            // Every member is gone already: that is what we wanted.
            Ok(()) | Err(Errno::SRCH) => {}
            Err(err) => {
                tracing::warn!(pgid = self.0.as_raw_nonzero().get(), ?signal, error = %err, "cannot signal worker process group");
            }
        }
    }
}

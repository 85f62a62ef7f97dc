//! The config watcher: the file the daemon was started with is read every
//! `server.config_watch_seconds`, and a change is reloaded like a `SIGHUP` once the file has
//! stayed the same for one more check, so that a file caught half-written is never applied.
//!
//! Reading a small file every few seconds costs nothing measurable, and unlike mtimes or
//! inotify it also sees a Kubernetes ConfigMap's symlink swap and filesystems with coarse
//! timestamps. Only changes reach a reload: text that a reload already read (through
//! `SIGHUP` or the admin API) or that means what runs now (a comment, a blank line) does
//! not, and a file that failed to reload is not tried again until it changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Reloader;

/// What the watcher knows of the file between checks.
#[derive(Debug, Default)]
struct Seen {
    /// The text last handled: in force, reloaded or refused.
    handled: Option<String>,
    /// A changed text seen once, reloaded if the next check finds it again.
    settling: Option<String>,
    /// The last read error, logged once until it changes.
    error: Option<String>,
}

/// What to do with the file's text at one check.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing changed, or the change is in force already.
    Nothing,
    /// Changed since the last check: wait for it to settle.
    Settle,
    /// Changed and settled: reload it.
    Reload,
}

impl Seen {
    /// Decides on `text`; `in_force` tells whether it means what runs now.
    fn step(&mut self, text: String, in_force: impl FnOnce(&str) -> bool) -> Step {
        self.error = None;
        if self.handled.as_deref() == Some(text.as_str()) {
            self.settling = None;
            return Step::Nothing;
        }
        if in_force(&text) {
            self.settling = None;
            self.handled = Some(text);
            return Step::Nothing;
        }
        if self.settling.as_deref() != Some(text.as_str()) {
            self.settling = Some(text);
            return Step::Settle;
        }
        self.settling = None;
        self.handled = Some(text);
        Step::Reload
    }
}

/// Checks `path` every `every` until `stop` turns true, reloading what changed.
pub async fn run(
    reloader: Arc<Reloader>,
    path: PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen = Seen::default();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(err) => {
                // A file being replaced may be missing for a moment; say so once.
                let error = err.to_string();
                if seen.error.as_ref() != Some(&error) {
                    tracing::warn!(path = %path.display(), %error, "cannot read the config file");
                    seen.error = Some(error);
                }
                continue;
            }
        };
        let first = seen.handled.is_none();
        let step = seen.step(text, |text| {
            if reloader.last_read_was(text) {
                return true;
            }
            let same = text
                .parse::<toml::Table>()
                .is_ok_and(|table| table == reloader.running_source());
            if same && !first {
                tracing::info!(
                    path = %path.display(),
                    "the config file changed, but not what it configures: nothing to reload"
                );
            }
            same
        });
        if step != Step::Reload {
            continue;
        }
        let Some(text) = seen.handled.clone() else {
            continue;
        };
        let reloader = Arc::clone(&reloader);
        let path = path.clone();
        // Validating and loading certificates is blocking work.
        let result = tokio::task::spawn_blocking(move || reloader.reload_text(&path, text)).await;
        super::log("file changed", result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        s.to_string()
    }

    /// A change is reloaded at the second check that finds it, once.
    #[test]
    fn a_change_reloads_once_it_has_settled() {
        let mut seen = Seen::default();
        assert_eq!(seen.step(text("a"), |_| true), Step::Nothing);
        assert_eq!(seen.step(text("a"), |_| false), Step::Nothing);
        assert_eq!(seen.step(text("b"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("b"), |_| false), Step::Reload);
        assert_eq!(seen.step(text("b"), |_| false), Step::Nothing);
    }

    /// A file caught while it is written settles on its final text before anything is
    /// reloaded.
    #[test]
    fn a_half_written_file_is_never_reloaded() {
        let mut seen = Seen::default();
        seen.step(text("whole"), |_| true);
        assert_eq!(seen.step(text("ha"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("half"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("new whole"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("new whole"), |_| false), Step::Reload);
    }

    /// Text already in force (reloaded by a signal, or only a comment changed) is not
    /// reloaded again, even while settling; a refused text is not retried until it changes.
    #[test]
    fn what_is_in_force_or_refused_is_left_alone() {
        let mut seen = Seen::default();
        seen.step(text("a"), |_| true);
        assert_eq!(seen.step(text("b"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("b"), |_| true), Step::Nothing);
        assert_eq!(seen.step(text("b # note"), |_| true), Step::Nothing);
        assert_eq!(seen.step(text("broken"), |_| false), Step::Settle);
        assert_eq!(seen.step(text("broken"), |_| false), Step::Reload);
        assert_eq!(seen.step(text("broken"), |_| false), Step::Nothing);
        assert_eq!(seen.step(text("fixed"), |_| false), Step::Settle);
    }
}

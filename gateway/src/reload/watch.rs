//! The config watcher: the file the daemon was started with is read every
//! `server.config_watch_seconds`, and a change is reloaded like a `SIGHUP` once the file has
//! stayed the same for one more check, so that a file caught half-written is never applied.
//!
//! Reading a small file every few seconds costs nothing measurable, and unlike mtimes or
//! inotify it also sees a Kubernetes ConfigMap's symlink swap and filesystems with coarse
//! timestamps. Only changes reach a reload: text that a reload already read (through
//! `SIGHUP` or the admin API) or that means what runs now (a comment, a blank line) does
//! not, and a file that failed to reload is not tried again until it changes.
//!
//! The certificate and key files of TLS listeners are watched the same way, each pair on
//! its own: a renewed pair is loaded for new handshakes without a config reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::Reloader;
use crate::config::Tls;
use crate::tls;

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
    /// Logs why a file cannot be read, once until the reason changes.
    fn warn_once(&mut self, error: String) {
        if self.error.as_ref() != Some(&error) {
            tracing::warn!(%error, "cannot read a watched file");
            self.error = Some(error);
        }
    }

    /// Decides on `text`; `in_force` tells whether it means what runs now.
    fn step(&mut self, text: String, in_force: impl FnOnce(&str) -> bool) -> Step {
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

/// Checks `path` (and the TLS files of the listeners in force) every `every` until `stop`
/// turns true, reloading what changed.
pub async fn run(
    reloader: Arc<Reloader>,
    path: PathBuf,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut config = Seen::default();
    let mut certificates = HashMap::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => return,
        }
        check_config(&reloader, &path, &mut config).await;
        check_certificates(&reloader, &mut certificates).await;
    }
}

/// One check of the config file.
async fn check_config(reloader: &Arc<Reloader>, path: &Path, seen: &mut Seen) {
    let Some(bytes) = read(path, seen).await else {
        return;
    };
    let Ok(text) = String::from_utf8(bytes) else {
        seen.warn_once(format!("{}: not UTF-8", path.display()));
        return;
    };
    seen.error = None;
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
    let (Step::Reload, Some(text)) = (step, seen.handled.clone()) else {
        return;
    };
    let reloader = Arc::clone(reloader);
    let path = path.to_path_buf();
    // Validating and loading certificates is blocking work.
    let result = tokio::task::spawn_blocking(move || reloader.reload_text(&path, text)).await;
    super::log("file changed", result);
}

/// One check of the certificate and key files of each TLS listener in force. A renewed
/// pair (cert-manager, certbot) is served to new handshakes once both files read the same
/// at two checks; open connections keep theirs.
async fn check_certificates(reloader: &Arc<Reloader>, seen: &mut HashMap<(String, Tls), Seen>) {
    let listeners = reloader.tls_listeners();
    seen.retain(|(name, tls), _| listeners.iter().any(|(n, t, _)| n == name && t == tls));
    for (listener, tls, loaded) in listeners {
        let files = seen.entry((listener.clone(), tls.clone())).or_default();
        let (Some(cert), Some(key)) = (read(&tls.cert, files).await, read(&tls.key, files).await)
        else {
            continue;
        };
        files.error = None;
        // Compared as digests, so that the key's text is not kept.
        let hex = |digest: tls::FilesDigest| format!("{:x}", Bytes::copy_from_slice(&digest));
        let in_force = hex(loaded);
        if files.step(hex(tls::files_digest(&cert, &key)), |d| d == in_force) != Step::Reload {
            continue;
        }
        let reloader = Arc::clone(reloader);
        let name = listener.clone();
        let result =
            tokio::task::spawn_blocking(move || reloader.reload_certificate(&name, &tls)).await;
        match result {
            Ok(Ok(())) => tracing::info!(%listener, "new certificate files loaded"),
            Ok(Err(err)) => tracing::error!(
                %listener,
                error = %err,
                "certificate reload failed; the listener keeps serving the certificate it had"
            ),
            Err(err) => tracing::error!(error = %err, "certificate reload task failed"),
        }
    }
}

/// The bytes of `path`, or `None` when it cannot be read (logged once per error: a file
/// being replaced may be missing for a moment).
async fn read(path: &Path, seen: &mut Seen) -> Option<Vec<u8>> {
    match tokio::fs::read(path).await {
        Ok(bytes) => Some(bytes),
        Err(err) => {
            seen.warn_once(format!("{}: {err}", path.display()));
            None
        }
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

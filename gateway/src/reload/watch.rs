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

use super::{InForce, Reloader};
use crate::config::Tls;
use crate::tls;

/// What the watcher knows of a file between checks.
#[derive(Debug, Default)]
struct Seen {
    /// The content last handled: in force, reloaded or refused.
    handled: Option<String>,
    /// A changed content seen once, reloaded if the next check finds it again.
    settling: Option<String>,
    /// The last read error, logged once until it changes.
    error: Option<String>,
    /// The reloader's count of reloads when `handled` was judged.
    reloads: u64,
    /// The content at the last check that judged it (the config file only).
    previous: Option<String>,
}

/// What to do with a file's content at one check.
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
    /// Decides on `content`; `in_force` tells whether it needs no reload.
    fn step(&mut self, content: String, in_force: impl FnOnce(&str) -> bool) -> Step {
        if self.handled.as_deref() == Some(content.as_str()) {
            self.settling = None;
            return Step::Nothing;
        }
        if in_force(&content) {
            self.settling = None;
            self.handled = Some(content);
            return Step::Nothing;
        }
        if self.settling.as_deref() != Some(content.as_str()) {
            self.settling = Some(content);
            return Step::Settle;
        }
        self.settling = None;
        self.handled = Some(content);
        Step::Reload
    }

    /// Logs why a file cannot be read, once until the reason changes.
    fn warn_once(&mut self, error: String) {
        if self.error.as_ref() != Some(&error) {
            tracing::warn!(%error, "cannot read a watched file");
            self.error = Some(error);
        }
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
        if check_certificates(&reloader, &mut certificates).await {
            // A config refused for want of these files may load now.
            reloader.retry_refused();
        }
    }
}

/// One check of the config file.
async fn check_config(reloader: &Arc<Reloader>, path: &Path, seen: &mut Seen) {
    // A reload since the last check (a signal, the API, this watcher) may have changed what
    // is in force: the file is judged afresh.
    let reloads = reloader.reloads();
    if reloads != seen.reloads {
        seen.reloads = reloads;
        seen.handled = None;
    }
    let Some(bytes) = read(path, seen).await else {
        return;
    };
    let Ok(text) = String::from_utf8(bytes) else {
        seen.warn_once(format!("{}: not UTF-8", path.display()));
        return;
    };
    seen.error = None;
    if seen.handled.as_deref() == Some(text.as_str()) {
        seen.settling = None;
        return;
    }
    // While a reload runs, the next check decides.
    let Some(in_force) = reloader.in_force(&text) else {
        return;
    };
    // News only when the file changed since the last check (not at the first check, nor
    // when a reload elsewhere sent the watcher back to the same text).
    let changed = seen
        .previous
        .as_ref()
        .is_some_and(|previous| *previous != text);
    if in_force == InForce::SameMeaning && changed {
        tracing::info!(
            path = %path.display(),
            "the config file changed, but not what it configures: nothing to reload"
        );
    }
    seen.previous = Some(text.clone());
    let step = seen.step(text, |_| in_force != InForce::No);
    let (Step::Reload, Some(text)) = (step, seen.handled.clone()) else {
        return;
    };
    let reloader = Arc::clone(reloader);
    let path = path.to_path_buf();
    // Validating and loading certificates is blocking work; the reload judges the text
    // again under the lock that orders reloads, and skips it if one applied it meanwhile.
    let result = tokio::task::spawn_blocking(move || reloader.reload_changed(&path, text)).await;
    match result {
        Ok(None) => {}
        Ok(Some(result)) => super::log("file_changed", Ok(result)),
        Err(err) => super::log("file_changed", Err(err)),
    }
}

/// One check of the certificate and key files of each TLS listener in force; whether a
/// pair settled on new content. A renewed pair (cert-manager, certbot) is served to new
/// handshakes once both files read the same at two checks; open connections keep theirs.
async fn check_certificates(
    reloader: &Arc<Reloader>,
    seen: &mut HashMap<(String, Tls), Seen>,
) -> bool {
    let Some(listeners) = reloader.tls_listeners() else {
        return false;
    };
    seen.retain(|(name, tls), _| listeners.iter().any(|(n, t, _)| n == name && t == tls));
    let mut settled = false;
    for (listener, tls, loaded) in listeners {
        let files = seen.entry((listener.clone(), tls.clone())).or_default();
        let Some(cert) = read(&tls.cert, files).await else {
            continue;
        };
        let Some(key) = read(&tls.key, files).await else {
            continue;
        };
        files.error = None;
        // Compared as digests, so that the key's text is not kept.
        let hex = |digest: tls::FilesDigest| format!("{:x}", Bytes::copy_from_slice(&digest));
        let in_force = hex(loaded);
        if files.step(hex(tls::files_digest(&cert, &key)), |d| d == in_force) != Step::Reload {
            continue;
        }
        settled = true;
        let reloader = Arc::clone(reloader);
        let name = listener.clone();
        let result =
            tokio::task::spawn_blocking(move || reloader.reload_certificate(&name, &tls)).await;
        match result {
            Ok(Ok(true)) => {
                super::count("certificate", true);
                tracing::info!(%listener, "new certificate files loaded");
            }
            // A reload changed the listener's files meanwhile, and loaded them.
            Ok(Ok(false)) => {}
            Ok(Err(err)) => {
                super::count("certificate", false);
                tracing::error!(
                    %listener,
                    error = %err,
                    "certificate reload failed; the listener keeps serving the certificate it had"
                );
            }
            Err(err) => tracing::error!(error = %err, "certificate reload task failed"),
        }
    }
    settled
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

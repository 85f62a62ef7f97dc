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

use super::{InForce, Reloader};
use crate::config::Tls;
use crate::tls;

/// What the watcher knows of a file between checks.
#[derive(Debug)]
struct Seen<T> {
    /// The content last handled: in force, reloaded or refused.
    handled: Option<T>,
    /// A changed content seen once, reloaded if the next check finds it again.
    settling: Option<T>,
    /// The last read error, logged once until it changes.
    error: Option<String>,
}

impl<T> Default for Seen<T> {
    fn default() -> Seen<T> {
        Seen {
            handled: None,
            settling: None,
            error: None,
        }
    }
}

/// What to do with a file's content at one check.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Nothing changed, the change is in force already, or it cannot be judged now.
    Nothing,
    /// Changed since the last check: wait for it to settle.
    Settle,
    /// Changed and settled: reload it.
    Reload,
}

impl<T: PartialEq> Seen<T> {
    /// Decides on `content`. `in_force` is asked only about content not handled yet:
    /// whether it needs no reload, or `None` when that cannot be told now (the next check
    /// decides).
    fn step(&mut self, content: T, in_force: impl FnOnce(&T) -> Option<bool>) -> Step {
        if self.handled.as_ref() == Some(&content) {
            self.settling = None;
            return Step::Nothing;
        }
        match in_force(&content) {
            None => return Step::Nothing,
            Some(true) => {
                self.settling = None;
                self.handled = Some(content);
                return Step::Nothing;
            }
            Some(false) => {}
        }
        if self.settling.as_ref() != Some(&content) {
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

/// What the watcher knows of the config file.
#[derive(Debug, Default)]
struct ConfigFile {
    seen: Seen<String>,
    /// The text at the last check that judged it.
    previous: Option<String>,
    /// The reloader's count of reloads when `seen` was last judged.
    reloads: u64,
}

/// Checks `path` (and the TLS files of the listeners in force) every `every`, reloading
/// what changed, until the task is aborted.
pub async fn run(reloader: Arc<Reloader>, path: PathBuf, every: Duration) {
    let mut config = ConfigFile::default();
    let mut certificates = HashMap::new();
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        check_config(&reloader, &path, &mut config).await;
        if check_certificates(&reloader, &mut certificates).await {
            // A config refused for want of these files may load now.
            reloader.retry_refused();
        }
    }
}

/// One check of the config file.
async fn check_config(reloader: &Arc<Reloader>, path: &Path, file: &mut ConfigFile) {
    // A reload since the last check (a signal, the API, this watcher) may have changed what
    // is in force: the file is judged afresh.
    let reloads = reloader.reloads();
    if reloads != file.reloads {
        file.reloads = reloads;
        file.seen.handled = None;
    }
    let Some(bytes) = read(path, &mut file.seen).await else {
        return;
    };
    let Ok(text) = String::from_utf8(bytes) else {
        file.seen
            .warn_once(format!("{}: not UTF-8", path.display()));
        return;
    };
    file.seen.error = None;
    let previous = &mut file.previous;
    let step = file.seen.step(text, |text| {
        // While a reload runs, the next check decides.
        let in_force = reloader.in_force(text)?;
        // News only when the file changed since the last check (not at the first check,
        // nor when a reload elsewhere sent the watcher back to the same text).
        let changed = previous.as_ref().is_some_and(|previous| previous != text);
        if in_force == InForce::SameMeaning && changed {
            tracing::info!(
                path = %path.display(),
                "the config file changed, but not what it configures: nothing to reload"
            );
        }
        *previous = Some(text.clone());
        Some(in_force != InForce::No)
    });
    let (Step::Reload, Some(text)) = (step, file.seen.handled.clone()) else {
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
    seen: &mut HashMap<(String, Tls), Seen<tls::FilesDigest>>,
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
        let digest = tls::files_digest(&cert, &key);
        if files.step(digest, |digest| Some(*digest == loaded)) != Step::Reload {
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
async fn read<T: PartialEq>(path: &Path, seen: &mut Seen<T>) -> Option<Vec<u8>> {
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

    fn step(seen: &mut Seen<&'static str>, content: &'static str, in_force: bool) -> Step {
        seen.step(content, |_| Some(in_force))
    }

    /// A change is reloaded at the second check that finds it, once.
    #[test]
    fn a_change_reloads_once_it_has_settled() {
        let mut seen = Seen::default();
        assert_eq!(step(&mut seen, "a", true), Step::Nothing);
        assert_eq!(step(&mut seen, "a", false), Step::Nothing);
        assert_eq!(step(&mut seen, "b", false), Step::Settle);
        assert_eq!(step(&mut seen, "b", false), Step::Reload);
        assert_eq!(step(&mut seen, "b", false), Step::Nothing);
    }

    /// A file caught while it is written settles on its final content before anything is
    /// reloaded.
    #[test]
    fn a_half_written_file_is_never_reloaded() {
        let mut seen = Seen::default();
        step(&mut seen, "whole", true);
        assert_eq!(step(&mut seen, "ha", false), Step::Settle);
        assert_eq!(step(&mut seen, "half", false), Step::Settle);
        assert_eq!(step(&mut seen, "new whole", false), Step::Settle);
        assert_eq!(step(&mut seen, "new whole", false), Step::Reload);
    }

    /// Content already in force (reloaded by a signal, or only a comment changed) is not
    /// reloaded again, even while settling; a refused one is not retried until it changes.
    #[test]
    fn what_is_in_force_or_refused_is_left_alone() {
        let mut seen = Seen::default();
        step(&mut seen, "a", true);
        assert_eq!(step(&mut seen, "b", false), Step::Settle);
        assert_eq!(step(&mut seen, "b", true), Step::Nothing);
        assert_eq!(step(&mut seen, "b # note", true), Step::Nothing);
        assert_eq!(step(&mut seen, "broken", false), Step::Settle);
        assert_eq!(step(&mut seen, "broken", false), Step::Reload);
        assert_eq!(step(&mut seen, "broken", false), Step::Nothing);
        assert_eq!(step(&mut seen, "fixed", false), Step::Settle);
    }

    /// Content that cannot be judged now (a reload holds the config) changes nothing: the
    /// next check starts where this one found things.
    #[test]
    fn undecided_content_waits_for_the_next_check() {
        let mut seen = Seen::default();
        step(&mut seen, "a", true);
        assert_eq!(step(&mut seen, "b", false), Step::Settle);
        assert_eq!(seen.step("b", |_| None), Step::Nothing);
        assert_eq!(step(&mut seen, "b", false), Step::Reload);
    }
}

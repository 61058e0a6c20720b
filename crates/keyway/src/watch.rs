//! Live reload: watch every config path and reload when a change is complete.
//!
//! Editors save in different ways: write in place, truncate then write, or write a
//! temporary file and rename it over the original. All of them produce events on the file or
//! its directory, so the directory of each path is watched.
//!
//! A file is never read while a writer still has it open: on Linux a file that was modified
//! counts as *being written* until its close-after-write event arrives (or, if it never does,
//! for at most [`MAX_OPEN_WAIT`]). A reload happens once no watched file is being written and
//! nothing changed for the debounce period (or, under a stream of changes, at least every
//! [`MAX_DELAY`]). If a reload still fails, for instance on a file some tool wrote in two
//! separate opens, the previous config keeps serving and the reload is retried shortly after,
//! and again on the next change. Files whose content did not change are not applied again.
//!
//! Several files are not updated atomically by editing them one by one; to change many at
//! once, swap a directory symlink or write one file. Both swaps are followed:
//!
//! - kubelet's update of a Secret or ConfigMap volume writes a new `..<timestamp>/`
//!   directory, points a `..data_tmp` symlink at it, renames that over `..data` and deletes
//!   the old directory; the visible `name.yaml -> ..data/name.yaml` links never change.
//!   Any event on a `..`-prefixed entry of a watched directory therefore counts as a change.
//! - a `--config` directory that is itself a symlink swapped to another directory: the
//!   directory holding the link is watched too, and a watch whose path now leads somewhere
//!   else is set up again on the new target before reloading.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::app::App;

/// Longest a file counts as being written without a close event.
pub const MAX_OPEN_WAIT: Duration = Duration::from_secs(5);
/// Longest a stream of changes can hold a reload back.
pub const MAX_DELAY: Duration = Duration::from_millis(250);
const RETRY_AFTER: Duration = Duration::from_millis(250);

/// Keeps the watcher alive; dropping it stops watching.
pub struct WatchHandle {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Files modified and not yet closed, with when they were first seen so.
type Writing = Arc<Mutex<HashMap<PathBuf, Instant>>>;

/// Starts watching `paths` (files or directories) and reloading `app` on change.
pub fn spawn(app: Arc<App>, paths: &[PathBuf], debounce: Duration) -> notify::Result<WatchHandle> {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let tx_initial = tx.clone();
    let absolute: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let config_dirs: HashSet<PathBuf> = absolute.iter().filter(|p| p.is_dir()).cloned().collect();
    let files: HashSet<PathBuf> = absolute.iter().filter(|p| !p.is_dir()).cloned().collect();
    // Directories watched for their entries: the config directories and the directories
    // holding config files. Their parents are watched too, for the config path itself
    // being replaced.
    let mut dirs: HashSet<PathBuf> = config_dirs.clone();
    dirs.extend(
        files
            .iter()
            .filter_map(|f| f.parent().map(Path::to_path_buf)),
    );
    let parents: HashSet<PathBuf> = config_dirs
        .iter()
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .filter(|p| !dirs.contains(p))
        .collect();
    let relevance = Relevance {
        files,
        config_dirs: config_dirs.clone(),
        dirs: dirs.clone(),
    };

    let writing: Writing = Arc::default();
    let in_callback = writing.clone();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let event = match res {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "file watch error");
                return;
            }
        };
        // The kernel's queue overflowed: events were lost, so look again.
        let mut changed = event.need_rescan();
        let mut writing = in_callback.lock().expect("writing lock");
        for path in &event.paths {
            let Some(what) = relevance.of(path) else {
                continue;
            };
            match (what, event.kind) {
                (
                    Entry::Manifest,
                    EventKind::Modify(ModifyKind::Data(_)) | EventKind::Create(_),
                ) => {
                    writing.entry(path.clone()).or_insert_with(Instant::now);
                }
                (Entry::Manifest, EventKind::Access(AccessKind::Close(AccessMode::Write))) => {
                    writing.remove(path);
                }
                (_, EventKind::Access(_)) => continue,
                _ => {
                    // Renamed into place, removed, metadata, a volume's `..data` swapped,
                    // the config path replaced: complete as it is.
                    writing.remove(path);
                }
            }
            changed = true;
        }
        drop(writing);
        if changed {
            let _ = tx.send(());
        }
    })?;
    let mut watches = Watches {
        watcher,
        targets: HashMap::new(),
    };
    for d in dirs.iter().chain(&parents) {
        watches.watch(d)?;
    }
    // Anything edited between the first load and now would otherwise wait for the next
    // change: look once (a no-op when nothing changed).
    let _ = tx_initial.send(());
    let task = tokio::spawn(reload_loop(app, rx, debounce, writing, watches, dirs));
    Ok(WatchHandle { task })
}

/// What a changed path is to the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Entry {
    /// A manifest file: read only once it is completely written.
    Manifest,
    /// A volume's `..data` link, a `..<timestamp>` directory, or the config path itself.
    Structure,
}

struct Relevance {
    files: HashSet<PathBuf>,
    config_dirs: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

impl Relevance {
    fn of(&self, path: &Path) -> Option<Entry> {
        if self.files.contains(path) {
            return Some(Entry::Manifest);
        }
        if self.config_dirs.contains(path) {
            return Some(Entry::Structure);
        }
        let parent = path.parent()?;
        if !self.dirs.contains(parent) {
            return None;
        }
        let name = path.file_name()?.to_string_lossy();
        if name.starts_with("..") {
            Some(Entry::Structure)
        } else if self.config_dirs.contains(parent) && is_manifest(path) {
            Some(Entry::Manifest)
        } else {
            None
        }
    }
}

/// The watcher, and where each watched path led when it was watched.
struct Watches {
    watcher: notify::RecommendedWatcher,
    targets: HashMap<PathBuf, Option<PathBuf>>,
}

impl Watches {
    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        self.watcher.watch(dir, RecursiveMode::NonRecursive)?;
        self.targets
            .insert(dir.to_path_buf(), std::fs::canonicalize(dir).ok());
        tracing::info!(dir = %dir.display(), "watching for changes");
        Ok(())
    }

    /// Watches again every directory whose path now leads to another directory (a symlink
    /// swapped): the old watch still follows the old directory.
    fn refresh(&mut self, dirs: &HashSet<PathBuf>) {
        for dir in dirs {
            let now = std::fs::canonicalize(dir).ok();
            if self.targets.get(dir) == Some(&now) {
                continue;
            }
            let _ = self.watcher.unwatch(dir);
            match self.watch(dir) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "config directory replaced; watching the new one")
                }
                Err(e) => {
                    // Gone for now (mid-swap): try again on the next event.
                    self.targets.insert(dir.clone(), None);
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot watch yet");
                }
            }
        }
    }
}

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

/// Whether some file is still open for writing (and not for suspiciously long).
fn still_writing(writing: &Writing) -> Option<Duration> {
    let w = writing.lock().expect("writing lock");
    w.values()
        .map(|since| since.elapsed())
        .filter(|age| *age < MAX_OPEN_WAIT)
        .min()
        .map(|age| MAX_OPEN_WAIT - age)
}

async fn reload_loop(
    app: Arc<App>,
    mut rx: mpsc::UnboundedReceiver<()>,
    debounce: Duration,
    writing: Writing,
    mut watches: Watches,
    dirs: HashSet<PathBuf>,
) {
    let mut retry = false;
    loop {
        if retry {
            if let Ok(None) = tokio::time::timeout(RETRY_AFTER, rx.recv()).await {
                return;
            }
        } else if rx.recv().await.is_none() {
            return;
        }
        // Settle: quiet for `debounce` (or `MAX_DELAY` since the first change), and no file
        // half-written.
        let first = Instant::now();
        loop {
            let wait = match still_writing(&writing) {
                Some(left) => left,
                None if first.elapsed() >= MAX_DELAY => break,
                None => debounce.min(MAX_DELAY.saturating_sub(first.elapsed())),
            };
            match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(())) => continue,
                Ok(None) => return,
                Err(_) if still_writing(&writing).is_some() => continue,
                Err(_) => break,
            }
        }
        watches.refresh(&dirs);
        let was_retry = retry;
        retry = match app.reload_if_changed(false).await {
            Ok(generation) => {
                tracing::debug!(generation, "reloaded after a file change");
                false
            }
            Err(_) => !was_retry,
        };
    }
}
